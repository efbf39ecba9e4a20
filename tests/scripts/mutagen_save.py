#!/usr/bin/env python3
"""Test helper: save a file with mutagen as a tag editor would, through the mount.

usage: mutagen_save.py small PATH TITLE [--id3v23]
           sets the title and adds genre "Edited" (a small edit: fits the padding)
       mutagen_save.py picture PATH IMAGE ALBUM [--id3v23]
           adds the JPEG file IMAGE as the front cover and sets the album: with a
           picture of a megabyte the header grows past any padding and mutagen shifts
           the whole file

Prints the seconds the save took.
"""
import base64
import sys
import time

import mutagen
from mutagen.flac import Picture
from mutagen.id3 import APIC, ID3, TALB, TCON, TIT2
from mutagen.mp4 import MP4Cover


def jpeg(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    v23 = "--id3v23" in sys.argv
    args = [a for a in sys.argv[3:] if not a.startswith("--")]
    started = time.time()
    f = mutagen.File(path)
    kind = type(f).__name__
    if kind in ("MP3", "WAVE", "AIFF"):
        if f.tags is None:
            f.add_tags()
        tags = f.tags
        if cmd == "small":
            tags.add(TIT2(encoding=3, text=[args[0]]))
            tags.add(TCON(encoding=3, text=["Edited"]))
        else:
            tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="front", data=jpeg(args[0])))
            tags.add(TALB(encoding=3, text=[args[1]]))
        if v23:
            f.save(v2_version=3)
        else:
            f.save()
    elif kind == "MP4":
        if cmd == "small":
            f["\xa9nam"] = [args[0]]
            f["\xa9gen"] = ["Edited"]
        else:
            f["covr"] = [MP4Cover(jpeg(args[0]), imageformat=MP4Cover.FORMAT_JPEG)]
            f["\xa9alb"] = [args[1]]
        f.save()
    else:
        # FLAC, Ogg Vorbis, Opus: Vorbis comments.
        if cmd == "small":
            f["title"] = [args[0]]
            f["genre"] = ["Edited"]
        else:
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = 3, "image/jpeg", "front", jpeg(args[0])
            if kind == "FLAC":
                f.add_picture(pic)
            else:
                f["metadata_block_picture"] = [base64.b64encode(pic.write()).decode()]
            f["album"] = [args[1]]
        f.save()
    print(f"{time.time() - started:.4f}")


if __name__ == "__main__":
    main()
