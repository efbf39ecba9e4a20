#!/usr/bin/env python3
"""Write WAV and AIFF fixtures into DIR with real tools: ffmpeg (LIST/INFO in WAV,
NAME/AUTH/ANNO/(c) in AIFF, RF64, WAVE_FORMAT_EXTENSIBLE, AIFC sowt), mutagen (ID3
chunks with a cover and a MusicBrainz TXXX), sox, and three hand-made files the way
buggy writers leave them (an odd-sized chunk without its pad byte, a data chunk whose
size was never written, chunks after the audio)."""
import os
import struct
import subprocess
import sys
import zlib

from mutagen.aiff import AIFF
from mutagen.id3 import APIC, TALB, TCON, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK, TXXX
from mutagen.wave import WAVE

d = sys.argv[1]
os.makedirs(d, exist_ok=True)
wav = os.path.join(d, ".tone.wav")
subprocess.run(["sox", "-R", "-n", "-r", "44100", "-b", "16", "-c", "2", wav, "synth", "3", "sine", "440"], check=True)


def png(w, h):
    def chunk(k, data):
        return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))
    raw = b"".join(b"\0" + bytes(3 * w) for _ in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def ff(out, *args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, *args, os.path.join(d, out)], check=True)


def meta(prefix, n):
    return ["-metadata", f"title={prefix} Title {n}", "-metadata", f"artist={prefix} Artist",
            "-metadata", f"album={prefix} Album", "-metadata", f"track={n}", "-metadata", "date=2001",
            "-metadata", "genre=Ambient"]


def id3(f, prefix, n):
    f.add_tags()
    f.tags.add(TIT2(encoding=3, text=[f"{prefix} Title {n}"]))
    f.tags.add(TPE1(encoding=3, text=[f"{prefix} Ärtist"]))
    f.tags.add(TPE2(encoding=3, text=[f"{prefix} Album Artist"]))
    f.tags.add(TALB(encoding=3, text=[f"{prefix} Album"]))
    f.tags.add(TRCK(encoding=3, text=[f"{n}/9"]))
    f.tags.add(TPOS(encoding=3, text=["1/1"]))
    f.tags.add(TDRC(encoding=3, text=["2002-03-04"]))
    f.tags.add(TCON(encoding=3, text=["Jazz"]))
    f.tags.add(TXXX(encoding=3, desc="MusicBrainz Album Id", text=[f"6a0f7f64-0000-4000-8000-00000000000{n}"]))
    f.tags.add(APIC(encoding=3, mime="image/png", type=3, desc="front", data=png(5, 4)))
    f.save()


# WAV: INFO from ffmpeg; ID3 from mutagen; both; RF64; 5.1 extensible.
ff("info.wav", *meta("INFO", 1))
ff("id3.wav")
id3(WAVE(os.path.join(d, "id3.wav")), "WAV", 2)
ff("both.wav", *meta("INFO", 3))
id3(WAVE(os.path.join(d, "both.wav")), "WAV", 3)
ff("rf64.wav", *meta("RF64", 4), "-rf64", "always")
ff("surround.wav", *meta("Surround", 5), "-af", "pan=5.1|c0=c0|c1=c1|c2=c0|c3=c1|c4=c0|c5=c1", "-c:a", "pcm_s24le")
# AIFF: text chunks from ffmpeg; ID3 from mutagen; AIFC (little-endian PCM) from ffmpeg.
ff("text.aiff", "-metadata", "title=AIFF Title 6", "-metadata", "author=AIFF Artist",
   "-metadata", "comment=An annotation", "-metadata", "copyright=(c) nobody")
ff("id3.aiff")
id3(AIFF(os.path.join(d, "id3.aiff")), "AIFF", 7)
ff("sowt.aifc", "-c:a", "pcm_s16le", "-metadata", "title=AIFC Title 11", "-metadata", "author=AIFF Artist")


def riff(chunks, form=b"WAVE", size=None):
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def chunk(cid, data, pad=True):
    return cid + struct.pack("<I", len(data)) + data + (b"\0" if pad and len(data) % 2 else b"")


def info(items):
    return chunk(b"LIST", b"INFO" + b"".join(chunk(k, v.encode() + b"\0") for k, v in items))


fmt8 = chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8))
samples = bytes((128 + int(100 * ((i % 40) - 20) / 20)) & 0xFF for i in range(8001))  # odd: 8001 bytes
# An odd data chunk with its pad byte, a LIST/INFO after the audio.
with open(os.path.join(d, "odd-after.wav"), "wb") as f:
    f.write(riff([fmt8, chunk(b"data", samples), info([(b"INAM", "Odd Title 8"), (b"IART", "Hand Made")])]))
# An odd chunk without its pad byte before the audio (a buggy writer).
with open(os.path.join(d, "nopad.wav"), "wb") as f:
    f.write(riff([fmt8, chunk(b"junk", b"abc", pad=False), info([(b"INAM", "No Pad 9"), (b"IART", "Hand Made")]),
                  chunk(b"data", samples[:8000])]))
# A recording never finalised: data size 0xFFFFFFFF, RIFF size 0.
with open(os.path.join(d, "unset.wav"), "wb") as f:
    f.write(riff([fmt8, info([(b"INAM", "Unset 10"), (b"IART", "Hand Made")]),
                  b"data" + struct.pack("<I", 0xFFFFFFFF) + samples[:8000]], size=0))
os.remove(wav)
