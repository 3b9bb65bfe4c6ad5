"""Sample statuses. Every input key ends as exactly one row with one of these."""

GROUNDED = "grounded"              # kept: at least one (chunk, box) pair above the threshold
NO_BOX = "no_box"                  # chunks found, but no box survived NMS + threshold
NO_NOUN_CHUNKS = "no_noun_chunks"  # caption has no concrete noun chunk (after the abstract filter)
BAD_CAPTION = "bad_caption"        # caption missing, empty, or not text
DECODE_ERROR = "decode_error"      # image bytes missing, corrupt, too large or undecodable
LETTERBOXED = "letterboxed"        # img2dataset 'border' resize: normalised boxes would be shifted
DOWNLOAD_ERROR = "download_error"  # img2dataset failed to fetch the url (status != success)
SHARD_ERROR = "shard_error"        # the sample's shard could not be read past this point
DETECTOR_ERROR = "detector_error"  # the detector raised on this sample
BAD_METADATA = "bad_metadata"      # a metadata field of wrong type, non-finite, out of range, oversize or over-nested
BAD_KEY = "bad_key"                # the key is not a safe plain file name (path separators, '..', control chars)
DUPLICATE_KEY = "duplicate_key"    # the key appears more than once in its shard: every copy is rejected
STAGE_ERROR = "stage_error"        # a stage raised on this sample alone (rerun one by one); the reason says why

KEPT = (GROUNDED,)
ALL = (GROUNDED, NO_BOX, NO_NOUN_CHUNKS, BAD_CAPTION, DECODE_ERROR, LETTERBOXED,
       DOWNLOAD_ERROR, SHARD_ERROR, DETECTOR_ERROR, BAD_METADATA, BAD_KEY, DUPLICATE_KEY, STAGE_ERROR)
