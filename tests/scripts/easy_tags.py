#!/usr/bin/env python3
"""Print the common tags of audio files as mutagen's "easy" interface reads them (the
same keys for every format), one JSON object per argument, one per line:
{"artist": [...], "album": [...], "title": [...], "tracknumber": [...], ...}.

The end-to-end client tests compare what MPD and beets index from the mount with this
independent reading of the served files.
"""
import json
import sys

import mutagen

KEYS = ("artist", "album", "title", "tracknumber", "albumartist", "date", "genre", "discnumber")

for path in sys.argv[1:]:
    f = mutagen.File(path, easy=True)
    tags = f.tags if f is not None and f.tags is not None else {}
    print(json.dumps({k: [str(v) for v in tags[k]] for k in KEYS if k in tags}, sort_keys=True))
