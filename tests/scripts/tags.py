#!/usr/bin/env python3
"""Print the tags and pictures of audio files as normalised JSON, read by mutagen.

Used by the end-to-end tests to compare what musefs serves with the original, through
an independent reader. One JSON object per argument, one per line.
"""
import base64
import hashlib
import json
import sys

import mutagen
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, ID3NoHeaderError
from mutagen.ogg import OggPage
from mutagen.oggflac import OggFLAC


def pic(p_type, mime, desc, data):
    return [int(p_type), str(mime), str(desc), hashlib.sha256(bytes(data)).hexdigest()]


def vorbis_like(f):
    tags, pics = [], []
    for k, v in (f.tags.items() if f.tags is not None else []):
        if k.lower() == "metadata_block_picture":
            for b64 in v:
                p = Picture(base64.b64decode(b64))
                pics.append(pic(p.type, p.mime, p.desc, p.data))
        else:
            for x in v:
                tags.append([k.lower(), x])
    if isinstance(f, FLAC):
        for p in f.pictures:
            pics.append(pic(p.type, p.mime, p.desc, p.data))
    if isinstance(f, OggFLAC):
        pics.extend(ogg_flac_pictures(f.filename))
    return {"tags": sorted(tags), "pictures": pics}


def ogg_flac_pictures(path):
    """PICTURE metadata blocks of an Ogg FLAC stream (mutagen does not list them): the
    header packets, read with mutagen's Ogg page parser, up to the last-block flag."""
    pics = []
    with open(path, "rb") as fh:
        pages = []
        while True:
            page = OggPage(fh)
            pages.append(page)
            packets = OggPage.to_packets(pages)
            if any(p and p[0] & 0x80 for p in packets[1:]) and page.complete:
                break
    for p in packets[1:]:
        if p and p[0] & 0x7F == 6:
            q = Picture(p[4:])
            pics.append(pic(q.type, q.mime, q.desc, q.data))
        if p and p[0] & 0x80:
            break
    return pics


def mp4(f):
    tags, pics = [], []
    for k, v in (f.tags.items() if f.tags is not None else []):
        if k == "covr":
            for c in v:
                pics.append(pic(3, str(c.imageformat), "", c))
        else:
            tags.append([k, repr(v)])
    return {"tags": sorted(tags), "pictures": pics}


def id3(path, t=None):
    if t is None:
        try:
            t = ID3(path)
        except ID3NoHeaderError:
            return {"tags": [], "pictures": []}
    tags, pics = [], []
    for f in t.values():
        fid = f.FrameID
        if fid == "APIC":
            pics.append(pic(f.type, f.mime, f.desc, f.data))
        elif fid == "TXXX":
            tags.append([fid, f.desc, [str(x) for x in f.text]])
        elif fid in ("COMM", "USLT"):
            text = f.text if isinstance(f.text, str) else "\0".join(str(x) for x in f.text)
            tags.append([fid, f.lang, f.desc, text])
        elif fid in ("PRIV", "UFID"):
            tags.append([fid, f.owner, f.data.hex()])
        elif hasattr(f, "text"):
            tags.append([fid, [str(x) for x in f.text]])
        else:
            tags.append([fid, repr(f)])
    return {"tags": sorted(tags, key=json.dumps), "pictures": pics}


def main():
    for path in sys.argv[1:]:
        try:
            f = mutagen.File(path)
        except Exception as e:  # a file mutagen refuses: say so, as one line
            print(json.dumps({"error": f"mutagen: {type(e).__name__}: {e}"}))
            continue
        if f is None:
            print(json.dumps({"error": "mutagen cannot read it"}))
        elif path.lower().endswith(".mp3"):
            print(json.dumps(id3(path), ensure_ascii=False))
        elif path.lower().endswith((".wav", ".aif", ".aiff", ".aifc")):
            # WAVE/AIFF: the ID3 chunk (mutagen does not read LIST/INFO or AIFF text chunks).
            print(json.dumps(id3(path, f.tags) if f.tags is not None else {"tags": [], "pictures": []},
                             ensure_ascii=False))
        elif path.lower().endswith((".m4a", ".m4b", ".mp4")):
            print(json.dumps(mp4(f), ensure_ascii=False))
        else:
            print(json.dumps(vorbis_like(f), ensure_ascii=False))


if __name__ == "__main__":
    main()
