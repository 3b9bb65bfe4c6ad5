"""A stand-in for GLIP's ``maskrcnn_benchmark`` (microsoft/GLIP) with exactly the API surface the example
adapter ``examples/detectors/glip_detector.py`` uses, so that the adapter's own code runs in tests without
GLIP's CUDA extensions or weights:

- ``maskrcnn_benchmark.config.cfg``: a yacs-like config node (``clone``, ``merge_from_file``,
  ``merge_from_list``, attribute access; unknown keys refused as yacs does);
- ``maskrcnn_benchmark.engine.predictor_glip.GLIPDemo(cfg, confidence_threshold, min_image_size,
  show_mask_heatmaps, ...)`` with ``compute_prediction(original_image, original_caption, custom_entity=None)``,
  ``tokenizer`` and ``plus``, following GLIP's code: entities from ``custom_entity`` char bounds, labels
  ``entity index + plus`` (plus = 1 for ``MODEL.RPN_ARCHITECTURE == "VLDYHEAD"``), prediction computed on the
  image resized to ``min_image_size`` and then resized back to the original image size;
- ``maskrcnn_benchmark.structures.bounding_box.BoxList`` (``bbox``, ``size``, ``mode``, ``convert``, ``resize``,
  ``get_field``/``add_field``/``has_field``).

The "model" is fixed: entity ``k`` of ``n`` gets a box on the vertical strip ``k/n .. (k+1)/n`` (10% to 90% of
the height) with score 0.9; entity 0 gets a second box shifted by 1% with score 0.8 (class-agnostic NMS must
remove it) and the last entity a small box in the top-left corner with score 0.3 (below the threshold).
"""
