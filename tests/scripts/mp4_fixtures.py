#!/usr/bin/env python3
"""Write MP4 fixtures into DIR with real tools: ffmpeg (AAC and ALAC, with and without
-movflags +faststart; an M4B with a chapter track) tagged with mutagen (text, several
values, trkn/disk, cpil, tmpo, a freeform atom, ©day, a PNG cover)."""
import os
import struct
import subprocess
import sys
import zlib

from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm

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


ff("aac.m4a", "-c:a", "aac", "-b:a", "128k")
ff("aac-faststart.m4a", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart")
ff("alac.m4a", "-c:a", "alac")
ff("alac-faststart.m4a", "-c:a", "alac", "-movflags", "+faststart")
meta = os.path.join(d, ".chapters.txt")
with open(meta, "w") as f:
    f.write(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1500\ntitle=One\n"
            "[CHAPTER]\nTIMEBASE=1/1000\nSTART=1500\nEND=3000\ntitle=Two\n")
subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, "-i", meta, "-map_metadata", "1",
                "-map_chapters", "1", "-c:a", "aac", "-b:a", "64k", "-f", "ipod", os.path.join(d, "book.m4b")], check=True)
os.remove(meta)
os.remove(wav)

for i, name in enumerate(["aac.m4a", "aac-faststart.m4a", "alac.m4a", "alac-faststart.m4a", "book.m4b"]):
    f = MP4(os.path.join(d, name))
    f["\xa9nam"] = [f"MP4 {name.split('.')[0]}"]
    f["\xa9ART"] = ["MP4 Artist", "Featured"]
    f["aART"] = ["MP4 Album Artist"]
    f["\xa9alb"] = ["Books" if name.endswith(".m4b") else "MP4 Album"]
    f["trkn"] = [(i + 1, 5)]
    f["disk"] = [(1, 1)]
    f["\xa9day"] = ["2003-04-05"]
    f["\xa9gen"] = ["Jazz"]
    f["cpil"] = i % 2 == 0
    f["tmpo"] = [100 + i]
    f["----:com.apple.iTunes:MusicBrainz Album Id"] = [MP4FreeForm(b"8a1f0b6e-0000-4000-8000-00000000000%d" % i)]
    f["covr"] = [MP4Cover(png(4, 3), imageformat=MP4Cover.FORMAT_PNG)]
    f.save()
