"""Stand-in of GLIP's ``maskrcnn_benchmark.config``: ``cfg``, the default configuration node."""
from __future__ import annotations

import copy


class CfgNode(dict):
    """The part of yacs' ``CfgNode`` GLIP's demo uses: nested attribute access, clone, merges."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def clone(self) -> "CfgNode":
        return copy.deepcopy(self)

    def merge_from_file(self, path: str) -> None:
        import yaml

        with open(path, encoding="utf-8") as handle:
            self._merge(yaml.safe_load(handle) or {}, "")

    def merge_from_list(self, pairs: list) -> None:
        if len(pairs) % 2:
            raise ValueError(f"merge_from_list needs key/value pairs, got {pairs}")
        for key, value in zip(pairs[0::2], pairs[1::2]):
            *parents, last = key.split(".")
            target = self
            for part in parents:
                target = target[part]
            if last not in target:
                raise KeyError(f"Non-existent config key: {key}")
            target[last] = value

    def _merge(self, values: dict, prefix: str) -> None:
        for key, value in values.items():
            if key not in self:
                raise KeyError(f"Non-existent config key: {prefix}{key}")
            if isinstance(self[key], CfgNode):
                self[key]._merge(value, f"{prefix}{key}.")
            else:
                self[key] = value


def _node(**values) -> CfgNode:
    node = CfgNode()
    for key, value in values.items():
        node[key] = value
    return node


cfg = _node(
    MODEL=_node(WEIGHT="", DEVICE="cuda", RPN_ARCHITECTURE="VLDYHEAD",
                LANGUAGE_BACKBONE=_node(TOKENIZER_TYPE="bert-base-uncased", MAX_QUERY_LEN=256)),
    INPUT=_node(TO_BGR255=True),
    DATALOADER=_node(SIZE_DIVISIBILITY=32),
    OUTPUT_DIR="",
)
