#!/usr/bin/env python3
"""Write FLAC-in-Ogg and Speex fixtures into DIR with real tools: `flac --ogg` (tags and a
PNG picture block, header count set), ffmpeg's Ogg FLAC muxer, ffmpeg's libspeex, and
mutagen adding tags to the Ogg FLAC and Speex files."""
import os
import struct
import subprocess
import sys
import zlib

from mutagen.oggflac import OggFLAC
from mutagen.oggspeex import OggSpeex

d = sys.argv[1]
os.makedirs(d, exist_ok=True)
wav = os.path.join(d, ".tone.wav")
subprocess.run(["sox", "-R", "-n", "-r", "44100", "-b", "16", "-c", "2", wav, "synth", "3", "sine", "330"], check=True)


def png(w, h):
    def chunk(k, data):
        return struct.pack(">I", len(data)) + k + data + struct.pack(">I", zlib.crc32(k + data))
    raw = b"".join(b"\0" + bytes(3 * w) for _ in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


cover = os.path.join(d, ".cover.png")
with open(cover, "wb") as f:
    f.write(png(6, 5))
subprocess.run(["flac", "--silent", "--ogg", "--serial-number=1234", "-f", "-o", os.path.join(d, "flac.oga"), "-T", "TITLE=Ogg FLAC 1",
                "-T", "ARTIST=Ogg Artist", "-T", "ALBUM=Ogg Album", "-T", "TRACKNUMBER=1",
                "-T", "MUSICBRAINZ_ALBUMID=0c4b5b8e-0000-4000-8000-000000000001",
                "--picture", f"3|image/png|front||{cover}", wav], check=True)
subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, "-c:a", "flac", "-fflags", "+bitexact", "-f", "ogg",
                "-metadata", "title=Ogg FLAC 2", "-metadata", "artist=Ogg Artist", "-metadata", "album=Ogg Album",
                "-metadata", "track=2", os.path.join(d, "ffmpeg-flac.oga")], check=True)
f = OggFLAC(os.path.join(d, "ffmpeg-flac.oga"))
f["ALBUMARTIST"] = "Ogg Album Artist"
f.save()
subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, "-ar", "16000", "-ac", "1", "-fflags", "+bitexact", "-c:a", "libspeex",
                "-metadata", "title=Speex 3", "-metadata", "artist=Ogg Artist", "-metadata", "album=Ogg Album",
                os.path.join(d, "speech.spx")], check=True)
f = OggSpeex(os.path.join(d, "speech.spx"))
f["TRACKNUMBER"] = "3"
f["GENRE"] = "Speech"
f.save()
os.remove(cover)
os.remove(wav)
