"""Readers of the benchmarks' file formats, one module per family, each checking as it reads (a problem is one
``ValueError`` line naming the file and the line or entry): ``common`` (JSON, records of jsonl / json / csv / parquet
files), ``predictions`` (our prediction files, fairseq ``H-`` lines, official results lists), ``mdetr`` (RefCOCO/+/g
and Flickr30k jsons), ``flickr30k_entities`` (the dataset folder), ``coco_captions``, ``karpathy``, ``vqa``,
``image_folders`` (labelled images)."""
