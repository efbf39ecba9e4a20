#!/usr/bin/env python3
"""Generate a small music library with real encoders, tagged with mutagen.

Usage: make_library.py OUTDIR [--broken]

Produces FLAC (plain, ID3v2-prefixed, 24-bit/96 kHz with several pictures, SEEKTABLE),
MP3 (ID3v2.3 and v2.4 with binary frames, ID3v1 and APEv2 trailers, junk before the
first frame), Ogg Vorbis and Opus (with art), unicode and hostile tag values. With
--broken it also writes files that must be skipped: truncated, empty, not audio.
Needs: sox, flac, metaflac, lame, oggenc, opusenc, python3-mutagen.
"""
import base64
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib

from mutagen.flac import FLAC, Picture
from mutagen.id3 import (ID3, APIC, COMM, PRIV, TALB, TCON, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK, TXXX, UFID)
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.apev2 import APEv2

# Incompressible picture bytes, the same on every run (the tests that damage copies of
# this library at random places stay repeatable).
NOISE = random.Random(1234)


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def png(width, height, seed):
    """A small valid PNG (solid colour), so pictures are real images."""
    raw = b"".join(b"\x00" + bytes([(seed * 40) % 256, (seed * 90) % 256, 200]) * width for _ in range(height))
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tone(path, seconds, rate=44100, bits=16, freq=440):
    run("sox", "-R", "-n", "-r", str(rate), "-b", str(bits), "-c", "2", path, "synth", str(seconds), "sine", str(freq), "vol", "0.3")


def flac_picture(data, ptype=3, desc="", mime="image/png"):
    p = Picture()
    p.type, p.mime, p.desc, p.data = ptype, mime, desc, data
    p.width, p.height, p.depth = 16, 16, 24
    return p


def make_flac(out, tmp, name, tags, *, rate=44100, bits=16, pictures=(), seektable=False, id3_prefix=False, freq=440):
    wav = os.path.join(tmp, name + ".wav")
    tone(wav, 2, rate, bits, freq)
    path = os.path.join(out, name + ".flac")
    args = ["flac", "-s", "-f", "-o", path, wav]
    if seektable:
        args[1:1] = ["-S", "1s"]
    else:
        args[1:1] = ["-S-"] if False else []
    run(*args)
    f = FLAC(path)
    for k, v in tags.items():
        f[k] = v
    for p in pictures:
        f.add_picture(p)
    f.save()
    if id3_prefix:
        body = open(path, "rb").read()
        tag = ID3()
        tag.add(TIT2(encoding=3, text=["ID3 prefix title"]))
        tag.add(PRIV(owner="musefs-test", data=b"\x00\x01\x02"))
        import io
        buf = io.BytesIO()
        tag.save(buf, v2_version=3)
        open(path, "wb").write(buf.getvalue() + body)
    return path


def make_mp3(out, tmp, name, frames, *, v2=4, v1=False, ape=False, junk=False, freq=330):
    wav = os.path.join(tmp, name + ".wav")
    tone(wav, 2, freq=freq)
    path = os.path.join(out, name + ".mp3")
    run("lame", "--quiet", "-b", "128", wav, path)
    if junk:
        data = open(path, "rb").read()
        # Junk with a false frame sync between the (absent) tag and the first frame.
        open(path, "wb").write(b"JUNK\xff\xfb\x90\x00junkjunk" + data)
    tag = ID3()
    for fr in frames:
        tag.add(fr)
    tag.save(path, v2_version=v2, v1=2 if v1 else 0)
    if ape:
        a = APEv2()
        a["Title"] = "APE title"
        a["Catalog"] = "CAT-001"
        a.save(path)
    return path


def make_ogg(out, tmp, name, tags, *, opus=False, cover=None, freq=550):
    wav = os.path.join(tmp, name + ".wav")
    tone(wav, 2, rate=48000 if opus else 44100, freq=freq)
    path = os.path.join(out, name + (".opus" if opus else ".ogg"))
    if opus:
        run("opusenc", "--quiet", "--serial", "1234", wav, path)
        f = OggOpus(path)
    else:
        run("oggenc", "-Q", "-s", "1234", "-o", path, wav)
        f = OggVorbis(path)
    for k, v in tags.items():
        f[k] = v
    if cover is not None:
        f["METADATA_BLOCK_PICTURE"] = [base64.b64encode(cover.write()).decode("ascii")]
    f.save()
    return path


def main():
    out = sys.argv[1]
    broken = "--broken" in sys.argv[2:]
    tmp = os.path.join(out, ".tmp")
    os.makedirs(tmp, exist_ok=True)
    d = lambda *p: os.makedirs(os.path.join(out, *p), exist_ok=True) or os.path.join(out, *p)

    cover = png(16, 16, 1)
    back = png(16, 16, 2)
    alpha = d("alpha")
    make_flac(alpha, tmp, "plain", {"ARTIST": "Alpha", "ALBUMARTIST": "Alpha", "ALBUM": "First", "TITLE": "Plain",
                                    "TRACKNUMBER": "1", "DATE": "2001", "GENRE": "Rock"}, pictures=[flac_picture(cover)], seektable=True)
    make_flac(alpha, tmp, "hires", {"ARTIST": "Alpha", "ALBUMARTIST": "Alpha", "ALBUM": "First", "TITLE": "Hi-Res",
                                    "TRACKNUMBER": "2", "DISCNUMBER": "1"}, rate=96000, bits=24,
              pictures=[flac_picture(cover), flac_picture(back, 4, "back")], freq=660)
    make_flac(alpha, tmp, "id3-prefixed", {"ARTIST": "Alpha", "ALBUMARTIST": "Alpha", "ALBUM": "First",
                                           "TITLE": "Prefixed", "TRACKNUMBER": "3"}, id3_prefix=True, freq=770)
    beta = d("beta", "mp3s")
    big_art = NOISE.randbytes(300 * 1024)
    make_mp3(beta, tmp, "v24", [TIT2(encoding=3, text=["Four"]), TPE1(encoding=3, text=["Beta", "Gamma"]),
                                 TPE2(encoding=3, text=["Beta"]), TALB(encoding=3, text=["Second"]),
                                 TRCK(encoding=3, text=["1/3"]), TDRC(encoding=3, text=["2010"]),
                                 TCON(encoding=3, text=["Jazz"]),
                                 APIC(encoding=3, mime="image/png", type=3, desc="cover", data=cover),
                                 PRIV(owner="musefs", data=b"\x00\xffbinary"), UFID(owner="http://mb", data=b"id-1"),
                                 COMM(encoding=3, lang="eng", desc="", text=["a comment"]),
                                 TXXX(encoding=3, desc="MY FIELD", text=["custom"])], v2=4)
    make_mp3(beta, tmp, "v23-trailers", [TIT2(encoding=1, text=["Three ünïcödé"]), TPE1(encoding=1, text=["Beta"]),
                                          TPE2(encoding=1, text=["Beta"]), TALB(encoding=1, text=["Second"]),
                                          TRCK(encoding=1, text=["2/3"]), TPOS(encoding=1, text=["1/1"]),
                                          APIC(encoding=0, mime="image/jpeg", type=3, desc="", data=b"\xff\xd8\xff" + big_art)],
             v2=3, v1=True, ape=True, freq=440)
    make_mp3(beta, tmp, "junk", [TIT2(encoding=3, text=["Junk Before"]), TPE2(encoding=3, text=["Beta"]),
                                  TALB(encoding=3, text=["Second"]), TRCK(encoding=3, text=["3"])], junk=True, freq=880)
    ogg = d("ogg")
    make_ogg(ogg, tmp, "vorbis", {"ARTIST": "Delta", "ALBUMARTIST": "Delta", "ALBUM": "Third", "TITLE": "Vorbis",
                                  "TRACKNUMBER": "1"}, cover=flac_picture(cover))
    make_ogg(ogg, tmp, "opus", {"ARTIST": "Delta", "ALBUMARTIST": "Delta", "ALBUM": "Third", "TITLE": "Opus",
                                "TRACKNUMBER": "2", "R128_TRACK_GAIN": "-512"}, opus=True, cover=flac_picture(back, 3))
    # A cover large enough that the comment packet spans several Ogg pages.
    make_ogg(ogg, tmp, "vorbis-bigart", {"ARTIST": "Delta", "ALBUMARTIST": "Delta", "ALBUM": "Third",
                                         "TITLE": "Big Art", "TRACKNUMBER": "3"},
             cover=flac_picture(png(16, 16, 3) + NOISE.randbytes(200 * 1024), 3, "big"), freq=600)
    hostile = d("hostile")
    make_flac(hostile, tmp, "dotdot", {"ARTIST": "../..", "ALBUMARTIST": "../..", "ALBUM": "..", "TITLE": "../x",
                                       "TRACKNUMBER": "1"})
    make_flac(hostile, tmp, "acdc", {"ARTIST": "AC/DC", "ALBUMARTIST": "AC/DC", "ALBUM": "/etc/passwd",
                                     "TITLE": "Back\x01In/Black", "TRACKNUMBER": "1"}, freq=500)
    make_flac(hostile, tmp, "untagged", {}, freq=520)
    make_flac(hostile, tmp, "日本語", {"ARTIST": "日本のアーティスト", "ALBUMARTIST": "日本のアーティスト",
                                       "ALBUM": "アルバム", "TITLE": "曲", "TRACKNUMBER": "7"}, freq=540)
    if broken:
        bad = d("broken")
        src = os.path.join(alpha, "plain.flac")
        data = open(src, "rb").read()
        open(os.path.join(bad, "truncated.flac"), "wb").write(data[:200])
        open(os.path.join(bad, "empty.mp3"), "wb").close()
        open(os.path.join(bad, "notes.mp3"), "w").write("this is not audio\n" * 50)
        open(os.path.join(bad, "cover.jpg"), "wb").write(cover)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
