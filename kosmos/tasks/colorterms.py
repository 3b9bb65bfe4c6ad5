"""ColorTerms (Bruni et al. 2012), one of Kosmos-1's cross-modal transfer tasks: concrete nouns and their colour.

File: the CSV as distributed with VaLM (``data/object_color/color-concrete-objects.csv``), header ``object,color``,
bare nouns ("sky", "coal"). Prompt, candidates and scoring as MemoryColor (``memorycolor.py``):
``The color of {object} is? {colour}`` over the 11 basic colours; the noun is written as the file gives it (no
article added); a row's id is its line number."""
from kosmos.tasks.memorycolor import colour_doc, colour_task, line_id
from kosmos.tasks.multiple_choice import Doc, require


def parse(record: dict, where: str) -> Doc:
    return colour_doc(line_id(where), require(record, "object", where), require(record, "color", where), where)


TASK = colour_task("colorterms", "ColorTerms (Bruni et al. 2012 CSV: object, color)",
                   "The color of {object} is? {red|white|green|yellow|blue|black|brown|orange|pink|grey|purple}",
                   parse, ("color-concrete-objects.csv", "*.csv"))
