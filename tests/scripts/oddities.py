#!/usr/bin/env python3
"""Write a library of real-world oddities into DIR: files as old and buggy taggers
leave them, made with real encoders (flac, lame, oggenc, sox) and mutagen, then edited
byte by byte where no tool writes the oddity. Each file is named after its oddity."""
import os
import struct
import subprocess
import sys
import zlib

from mutagen.flac import FLAC, CueSheet, CueSheetTrack, CueSheetTrackIndex, Picture
from mutagen.id3 import APIC, COMM, ID3, TIT2, TPE1, TALB, TXXX
from mutagen.oggvorbis import OggVorbis
import base64

d = sys.argv[1]
tmp = os.path.join(d, ".tmp")
os.makedirs(tmp, exist_ok=True)


def run(*a):
    subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def png(w, h):
    def chunk(k, data):
        return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))
    raw = b"".join(b"\0" + bytes(4 * w) for _ in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


wav = os.path.join(tmp, "t.wav")
run("sox", "-R", "-n", "-r", "44100", "-b", "16", "-c", "2", wav, "synth", "2", "sine", "440")


def flac(name, *tags):
    out = os.path.join(d, name)
    args = ["flac", "-s", "-f", "-o", out]
    for t in tags:
        args[2:2] = ["-T", t]
    run(*args, wav)
    return out


def mp3(name):
    out = os.path.join(d, name)
    run("lame", "--quiet", "-b", "128", wav, out)
    return out


def ogg(name, *tags):
    out = os.path.join(d, name)
    args = ["oggenc", "-Q", "-s", "1234", "-o", out]
    for t in tags:
        args += ["-c", t]
    run(*args, wav)
    return out


def id3_frame23(fid, payload):
    return fid + struct.pack(">I", len(payload)) + b"\0\0" + payload


def raw_id3v23(frames, audio):
    body = b"".join(frames)
    size = len(body)
    ss = bytes([(size >> 21) & 0x7f, (size >> 14) & 0x7f, (size >> 7) & 0x7f, size & 0x7f])
    return b"ID3\x03\x00\x00" + ss + body + audio


image = png(2, 3)

# Windows Media Player: empty TENC/TCOP/TOPE frames beside real ones.
p = mp3("wmp-empty-frames.mp3")
audio = open(p, "rb").read()
open(p, "wb").write(raw_id3v23([
    id3_frame23(b"TIT2", b"\0WMP Song"), id3_frame23(b"TPE1", b"\0WMP Artist"),
    id3_frame23(b"TENC", b""), id3_frame23(b"TCOP", b""), id3_frame23(b"TOPE", b""),
], audio))

# A year frame that says UTF-16 and holds only a BOM.
p = mp3("bom-only-year.mp3")
audio = open(p, "rb").read()
open(p, "wb").write(raw_id3v23([
    id3_frame23(b"TIT2", b"\0BOM Year"), id3_frame23(b"TPE1", b"\0Tagger"), id3_frame23(b"TYER", b"\x01\xff\xfe"),
], audio))

# One image in three files with different picture fields.
f = FLAC(flac("pic-depth24.flac", "TITLE=Pic FLAC", "ARTIST=Pics"))
pic = Picture()
pic.type, pic.mime, pic.desc, pic.width, pic.height, pic.depth, pic.data = 3, "image/png", "front", 2, 3, 24, image
f.add_picture(pic)
f.save()
v = OggVorbis(ogg("pic-depth32.ogg", "TITLE=Pic Vorbis", "ARTIST=Pics"))
pic2 = Picture()
pic2.type, pic2.mime, pic2.desc, pic2.width, pic2.height, pic2.depth, pic2.data = 3, "image/png", "", 2, 3, 32, image
v["metadata_block_picture"] = [base64.b64encode(pic2.write()).decode()]
v.save()
p = mp3("pic-apic.mp3")
t = ID3()
t.add(TIT2(encoding=3, text="Pic MP3"))
t.add(TPE1(encoding=3, text="Pics"))
t.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=image))
t.save(p, v2_version=4)

# The same field twice under two names; many values; several comments and TXXX.
flac("disc-and-discnumber.flac", "TITLE=Two Discs", "ARTIST=Disc", "ALBUM=Discs", "DISC=4", "DISCNUMBER=4",
     "ARTIST=Second Artist", "GENRE=Rock", "GENRE=Pop")
p = mp3("multi-comments.mp3")
t = ID3()
t.add(TIT2(encoding=1, text=["Ünïcödé", "Second"]))
t.add(TPE1(encoding=3, text="Many"))
t.add(TALB(encoding=0, text="Latin-1 Album"))
t.add(COMM(encoding=3, lang="eng", desc="", text="english comment"))
t.add(COMM(encoding=3, lang="deu", desc="note", text="deutscher Kommentar"))
t.add(TXXX(encoding=3, desc="MusicBrainz Album Id", text="0b6b1c4e-0000-4000-8000-000000000000"))
t.add(TXXX(encoding=1, desc="CATALOGNUMBER", text=["A-1", "B-2"]))
t.save(p, v2_version=3)

# Untagged files of every format (named by their file and folder only).
os.makedirs(os.path.join(d, "Untagged Folder"), exist_ok=True)
run("flac", "-s", "-f", "-o", os.path.join(d, "Untagged Folder", "bare.flac"), wav)
run("lame", "--quiet", "-b", "96", wav, os.path.join(d, "Untagged Folder", "bare.mp3"))
run("oggenc", "-Q", "-s", "1234", "-o", os.path.join(d, "Untagged Folder", "bare.ogg"), wav)

# A cue sheet whose offsets are not multiples of 588 (symphonia refuses it).
f = FLAC(flac("cue-not-cdda.flac", "TITLE=Cue", "ARTIST=Odd"))
cs = CueSheet(None)
cs.media_catalog_number, cs.lead_in_samples, cs.compact_disc = b"", 88200, True
t1 = CueSheetTrack(1, 0); t1.indexes.append(CueSheetTrackIndex(1, 0)); t1.type = 0; t1.pre_emphasis = False; t1.isrc = b""
t2 = CueSheetTrack(2, 44101); t2.indexes.append(CueSheetTrackIndex(1, 0)); t2.type = 0; t2.pre_emphasis = False; t2.isrc = b""
lead = CueSheetTrack(170, 88200); lead.isrc = b""; lead.type = 0; lead.pre_emphasis = False
cs.tracks = [t1, t2, lead]
f.metadata_blocks.append(cs)
f.save()

# An Ogg page whose CRC fails deep in the audio.
p = ogg("bad-crc-in-audio.ogg", "TITLE=Bad CRC", "ARTIST=Odd")
b = bytearray(open(p, "rb").read())
b[-10] ^= 0x40
open(p, "wb").write(bytes(b))

# A name from an old Latin-1 system.
p = flac("placeholder.flac", "TITLE=Latin One", "ARTIST=Caf\u00e9")
os.rename(p, os.path.join(d.encode(), b"caf\xe9 latin1.flac"))

# ID3v1 only, no ID3v2.
p = mp3("id3v1-only.mp3")
tag = b"TAG" + b"V1 Title".ljust(30, b"\0") + b"V1 Artist".ljust(30, b"\0") + b"V1 Album".ljust(30, b"\0") + \
    b"1999" + b"comment".ljust(28, b"\0") + b"\0\x05" + bytes([17])
open(p, "ab").write(tag)

for x in os.listdir(tmp):
    os.remove(os.path.join(tmp, x))
os.rmdir(tmp)
