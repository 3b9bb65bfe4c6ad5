"""The limits on what one input may make grit read or compute (defaults; docs/robustness.md lists them).

Each is a default for a setting of the same name (lower case) where one exists; the code that enforces a
limit imports it from here, so every reader (pipeline, views, Kosmos-2 loader, `grit spans`) applies the
same numbers.
"""

# Tar members larger than this are skipped from their header, before any byte is read (`--max-member-bytes`).
# Real LAION/COYO images as img2dataset stores them are a few MB at most.
MAX_MEMBER_BYTES = 50 * 1024 * 1024
# Longer captions are rejects (bad_caption) before spaCy sees them (`--max-caption-chars`). spaCy's time and
# memory grow with the text (a 400k-character caption costs it over a minute and gigabytes); alt-texts are
# far shorter, and the Kosmos-2 context is 2048 tokens.
MAX_CAPTION_CHARS = 4096
# A sample's KEY.json beyond these is bad_metadata (img2dataset writes a flat object of a few hundred bytes).
MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
# Keys longer than this (UTF-8 bytes) are bad_key: with an extension they would pass the 255-byte file
# name limit of common file systems.
MAX_KEY_BYTES = 200
