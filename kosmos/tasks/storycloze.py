"""StoryCloze 2016 (the Rochester CSV ``cloze_test_val__spring2016``: InputSentence1-4, RandomFifthSentenceQuiz1-2,
AnswerRightEnding; or lm-evaluation-harness's snake_case names).

Template: lm-evaluation-harness 0.4 ``storycloze/storycloze_2016.yaml`` (v0.3.0's ``storycloze.py`` writes the same
text): the four sentences joined by a space, each ending a choice."""
from kosmos.tasks.multiple_choice import Doc, language_task, require


def parse(record: dict, where: str) -> Doc:
    snake = "input_sentence_1" in record
    names = ([f"input_sentence_{i}" for i in range(1, 5)] + ["sentence_quiz1", "sentence_quiz2", "answer_right_ending",
                                                            "story_id"]) if snake else \
        ([f"InputSentence{i}" for i in range(1, 5)] + ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2",
                                                       "AnswerRightEnding", "InputStoryid"])
    sentences = [require(record, n, where) for n in names[:4]]
    answer = require(record, names[6], where, (str, int))
    if str(answer).strip() not in ("1", "2"):
        raise ValueError(f"{where}: {names[6]} must be 1 or 2, got {answer!r:.20}")
    return Doc(record.get(names[7], where), " ".join(s.strip() for s in sentences),
               [require(record, names[4], where).strip(), require(record, names[5], where).strip()], int(answer) - 1)


TASK = language_task("storycloze", "StoryCloze 2016 (CSV or jsonl)", "{sentence 1-4} {ending}", parse,
                     ("*val*.csv", "*val*.jsonl", "*test*.csv", "*.csv"), ("*train*.csv",),
                     demonstrations="the validation file itself (no training split with endings), query excluded")
