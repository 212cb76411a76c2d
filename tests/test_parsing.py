"""Answer parsing: realistic teacher replies per task and prompt style -> the answer kept, or why not."""

import json
import time

import pytest

from shared.manifest.model import PromptSettings
from shared.parsing import parse_reply
from shared.reasons import Reason
from shared.tasks import Task
from shared.tasks.base import Accepted, Rejected
from shared.tasks.reading import excerpt

PLAIN = PromptSettings()
COT = PromptSettings(chain_of_thought=True)
COD = PromptSettings(chain_of_density=True)

NLI_QUESTION = (
    "Given the following two texts, your task is to determine the logical relationship between them.\n\n"
    "Premise: He was born in Illinois, but moved to Oklahoma in 1949.\nHypothesis: He was born in Illinois.")
QA5 = ("Answer the following multiple-choice question by selecting the correct option.\n\n"
       "Question: Where would you keep your savings safe?\nAnswer Choices:\n(A) bank\n(B) library\n"
       "(C) populated areas\n(D) kitchen\n(E) zoo")
QA3 = "Question: Where do people keep money?\nA. bank\nB. library\nC. river"
MATH_QUESTION = ("Question:  There are 64 students trying out for the school's trivia teams. If 36 of them "
                 "didn't get picked for the team and the rest were put into 4 groups, how many students "
                 "would be in each group?")
UNTERMINATED = '{"reasoning": "The answer depends on'  # cut-off JSON, no answer (as the fake teacher's)


def parse(task: Task, reply: str | None, prompt: PromptSettings = PLAIN, *, question: str = "",
          finish: str | None = "stop") -> Accepted | Rejected:
    return parse_reply(task, reply, finish, question=question, prompt=prompt)


def check(result: Accepted | Rejected, expected: str | Reason) -> None:
    if isinstance(expected, Reason):
        assert isinstance(result, Rejected), f"expected {expected.value}, got {result}"
        assert result.reason is expected, result
        assert result.detail and "\n" not in result.detail
    else:
        assert isinstance(result, Accepted), f"expected {expected!r}, got {result}"
        assert result.answer == expected


# --- NLI ---------------------------------------------------------------------------------------------------
NLI_PLAIN = [
    pytest.param("entailment", "entailment", id="bare-label"),
    pytest.param("Neutral", "neutral", id="capitalised"),
    pytest.param("CONTRADICTION", "contradiction", id="upper-case"),
    pytest.param("**Neutral**", "neutral", id="markdown-bold"),
    pytest.param("'contradiction'.", "contradiction", id="quoted-with-period"),
    pytest.param("`entailment`", "entailment", id="backticks"),
    pytest.param("entailment\n", "entailment", id="trailing-newline"),
    pytest.param("Entailment.\n\nThe premise states that he was born in Illinois, which is exactly what the "
                 "hypothesis claims; nothing in it is neutral or contradictory.", "entailment",
                 id="label-then-explanation"),
    pytest.param("Neutral: the premise never says where he lives today, so it neither entails nor "
                 "contradicts it.", "neutral", id="label-opens-the-sentence"),
    pytest.param("The answer is: Neutral.", "neutral", id="the-answer-is"),
    pytest.param("Label: contradiction", "contradiction", id="label-colon"),
    pytest.param("The relationship is: entailment", "entailment", id="relationship-is"),
    pytest.param("Based on the premise, the hypothesis is clearly an entailment since it repeats the first "
                 "clause.", "entailment", id="only-label-in-prose"),
    pytest.param("It is not a contradiction; the hypothesis is simply neutral about his later life.",
                 "neutral", id="negated-label-ignored"),
    pytest.param("Answer: neutral, not entailment", "neutral", id="answer-with-negated-alternative"),
    pytest.param('{"answer": "entailment"}', "entailment", id="json-in-plain-mode"),
    pytest.param("<think>It could be neutral... no, he was born there, so entailment.</think>\n\nEntailment",
                 "entailment", id="think-block-dropped"),
    pytest.param("maybe", Reason.INVALID_LABEL, id="not-a-label"),
    pytest.param("Unknown.", Reason.INVALID_LABEL, id="unknown"),
    pytest.param("Not entailment.", Reason.INVALID_LABEL, id="negated-label"),
    pytest.param("Answer: undetermined, the premise could go either way", Reason.INVALID_LABEL,
                 id="explicit-answer-not-a-label"),
    pytest.param("It could be entailment or neutral depending on how you read the word 'born'.",
                 Reason.NO_ANSWER, id="two-labels-hedged"),
    pytest.param("I'm sorry, but I can't determine the relationship between these texts without more "
                 "context.", Reason.NO_ANSWER, id="refusal"),
    pytest.param(UNTERMINATED, Reason.NO_ANSWER, id="unterminated-json-in-plain-mode"),
]

NLI_COT = [
    pytest.param('{"reasoning": "The hypothesis restates the first clause of the premise.", '
                 '"answer": "entailment"}', "entailment", id="clean-json"),
    pytest.param('```json\n{"reasoning": "Moving away does not change the birthplace.", '
                 '"answer": "entailment"}\n```', "entailment", id="fenced"),
    pytest.param('Sure! Here is my analysis:\n\n```json\n{\n  "reasoning": "Nothing is said about his job.",'
                 '\n  "answer": "Neutral"\n}\n```\n\nLet me know if you need anything else!', "neutral",
                 id="chatty-fenced"),
    pytest.param('I think the answer is clear. {"reasoning": "He moved in 1949.", "answer": "contradiction"} '
                 "Hope that helps.", "contradiction", id="json-amid-prose"),
    pytest.param("{'reasoning': \"The premise doesn't mention his job.\", 'answer': 'neutral'}", "neutral",
                 id="single-quotes"),
    pytest.param('{"reasoning": "The places differ.", "answer": "contradiction",}', "contradiction",
                 id="trailing-comma"),
    pytest.param('{"reason": "Born in Illinois is stated outright.", "answer_choice": "Entailment"}',
                 "entailment", id="managed-service-keys"),
    pytest.param('{"Reasoning": "Stated outright.", "Answer": "ENTAILMENT"}', "entailment",
                 id="capitalised-keys"),
    pytest.param('{"reasoning": "The premise says "born in Illinois", which is the hypothesis.", '
                 '"answer": "entailment"}', "entailment", id="unescaped-quotes-in-reasoning"),
    pytest.param('{"reasoning": "No job is mentioned.", "answer": neutral}', "neutral", id="unquoted-value"),
    pytest.param('{reasoning: "The texts agree.", answer: entailment}', "entailment", id="unquoted-keys"),
    pytest.param('{"reasoning": "Step 1: he was born in Illinois.\nStep 2: that is the hypothesis.", '
                 '"answer": "entailment"}', "entailment", id="raw-newline-in-string"),
    pytest.param('{"reasoning": "The texts agree.", "answer": "entailment"', "entailment",
                 id="missing-closing-brace"),
    pytest.param("The premise says he moved to Oklahoma, but the hypothesis only concerns his birthplace.\n\n"
                 "Answer: entailment", "entailment", id="answer-line-instead-of-json"),
    pytest.param("Comparing the two texts, the correct label is \\boxed{\\text{neutral}}.", "neutral",
                 id="boxed-text"),
    pytest.param('{"reasoning": "Hard to say.", "answer": "maybe"}', Reason.INVALID_LABEL,
                 id="json-wrong-label"),
    pytest.param('{"reasoning": "Hard to say.", "answer": "partially true"}', Reason.INVALID_LABEL,
                 id="json-free-text-answer"),
    pytest.param(UNTERMINATED, Reason.INVALID_JSON, id="unterminated-json"),
    pytest.param("Let me think about this step by step. The premise describes a birthplace and a move.",
                 Reason.INVALID_JSON, id="prose-without-answer"),
    pytest.param('{"reasoning": "None of the labels fits well."}', Reason.INVALID_JSON,
                 id="json-without-answer"),
    pytest.param('{"reasoning": "Unsure.", "answer": null}', Reason.INVALID_JSON, id="json-null-answer"),
]


@pytest.mark.parametrize("reply,expected", NLI_PLAIN)
def test_nli_plain_replies(reply: str, expected: str | Reason) -> None:
    check(parse(Task.NLI, reply, question=NLI_QUESTION), expected)


@pytest.mark.parametrize("reply,expected", NLI_COT)
def test_nli_chain_of_thought_replies(reply: str, expected: str | Reason) -> None:
    check(parse(Task.NLI, reply, COT, question=NLI_QUESTION), expected)


# --- NLU_QA ------------------------------------------------------------------------------------------------
QA5_PLAIN = [
    pytest.param("A", "A", id="bare-letter"),
    pytest.param("b", "B", id="lower-case-letter"),
    pytest.param("(C)", "C", id="parenthesised"),
    pytest.param("C) populated areas", "C", id="letter-paren-text"),
    pytest.param("Option D", "D", id="option-word"),
    pytest.param("E. zoo", "E", id="letter-dot-text"),
    pytest.param("**B**", "B", id="markdown-bold"),
    pytest.param("[A]", "A", id="square-brackets"),
    pytest.param("The answer is (B) library.", "B", id="the-answer-is"),
    pytest.param("Answer: A) bank", "A", id="answer-colon"),
    pytest.param("The correct answer would be A, because banks keep money safe.", "A",
                 id="answer-with-because"),
    pytest.param("populated areas", "C", id="option-text-only"),
    pytest.param("Populated Areas.", "C", id="option-text-any-case"),
    pytest.param("I think B.", "B", id="letter-in-a-short-sentence"),
    pytest.param("It's A.", "A", id="its-letter"),
    pytest.param("A\n\nExplanation: a bank keeps savings safe; (B) library and (E) zoo do not.", "A",
                 id="letter-then-explanation"),
    pytest.param("I would go with option A, since banks are built to keep money safe.", "A",
                 id="option-in-prose"),
    pytest.param("Savings are safest where they are insured and guarded.\n\nA", "A",
                 id="letter-on-last-line"),
    pytest.param("\\boxed{A}", "A", id="boxed"),
    pytest.param("F", Reason.INVALID_CHOICE, id="letter-beyond-options"),
    pytest.param("Z", Reason.INVALID_CHOICE, id="fake-teacher-wrong-letter"),
    pytest.param("The correct answer is F.", Reason.INVALID_CHOICE, id="answer-is-beyond-options"),
    pytest.param("swimming pool", Reason.INVALID_CHOICE, id="text-of-no-option"),
    pytest.param("I'm not sure.", Reason.INVALID_CHOICE, id="not-sure"),
    pytest.param("Both A and C could be right here.", Reason.NO_ANSWER, id="two-letters-hedged"),
    pytest.param("Honestly, none of these options is a good place for savings in my view.", Reason.NO_ANSWER,
                 id="no-letter-in-prose"),
]

QA3_REPLIES = [
    pytest.param(PLAIN, "C", "C", id="plain-last-option"),
    pytest.param(PLAIN, "B. library", "B", id="plain-letter-dot-text"),
    pytest.param(PLAIN, "river", "C", id="plain-option-text"),
    pytest.param(PLAIN, "D", Reason.INVALID_CHOICE, id="plain-D-of-three"),
    pytest.param(PLAIN, "(D) kitchen", Reason.INVALID_CHOICE, id="plain-D-with-text"),
    pytest.param(PLAIN, "The answer is E.", Reason.INVALID_CHOICE, id="plain-E-of-three"),
    pytest.param(COT, '{"reasoning": "Money goes in a bank.", "answer": "A"}', "A", id="cot-json"),
    pytest.param(COT, '{"reasoning": "Kitchen jars are common.", "answer": "D"}', Reason.INVALID_CHOICE,
                 id="cot-json-D-of-three"),
]

QA5_COT = [
    pytest.param('{"reason": "A bank is designed to keep money safe.", "answer_choice": "A"}', "A",
                 id="managed-service-keys"),
    pytest.param('{"reasoning": "People live there.", "answer": "(C) populated areas"}', "C",
                 id="json-letter-with-text"),
    pytest.param('{"reasoning": "Banks store money.", "answer": "bank"}', "A", id="json-option-text"),
    pytest.param('{"reasoning": "Banks store money.", "answer": "The correct option is A"}', "A",
                 id="json-sentence-naming-a-letter"),
    pytest.param('{"Reasoning": "Books, not money.", "Final Answer": "E"}', "E", id="final-answer-key"),
    pytest.param("```json\n{'reasoning': 'Books are kept in a library.', 'answer': 'B',}\n```", "B",
                 id="fenced-single-quotes-trailing-comma"),
    pytest.param("Savings need a safe, insured place.\nSo the final answer is \\boxed{\\text{A}}.", "A",
                 id="boxed-text"),
    pytest.param("A bank is the only option built for money. Therefore, the answer is (A).", "A",
                 id="answer-is-in-prose"),
    pytest.param('{"reasoning": "Kitchens are in every home.", "answer": "F"}', Reason.INVALID_CHOICE,
                 id="json-letter-beyond-options"),
    pytest.param(UNTERMINATED, Reason.INVALID_JSON, id="unterminated-json"),
    pytest.param("Hmm, tough one. Every place listed seems plausible to me.", Reason.INVALID_JSON,
                 id="prose-without-answer"),
]


@pytest.mark.parametrize("reply,expected", QA5_PLAIN)
def test_qa_plain_replies_with_five_options(reply: str, expected: str | Reason) -> None:
    check(parse(Task.NLU_QA, reply, question=QA5), expected)


@pytest.mark.parametrize("prompt,reply,expected", QA3_REPLIES)
def test_qa_replies_with_three_options(prompt: PromptSettings, reply: str, expected: str | Reason) -> None:
    check(parse(Task.NLU_QA, reply, prompt, question=QA3), expected)


@pytest.mark.parametrize("reply,expected", QA5_COT)
def test_qa_chain_of_thought_replies(reply: str, expected: str | Reason) -> None:
    check(parse(Task.NLU_QA, reply, COT, question=QA5), expected)


def test_qa_question_without_option_lines_accepts_any_letter() -> None:
    check(parse(Task.NLU_QA, "C", question="Which one is right: A, B or C?"), "C")


# --- MATH --------------------------------------------------------------------------------------------------
MATH_PLAIN = [
    pytest.param("7", "7", id="bare-number"),
    pytest.param("1,000", "1000", id="thousands-separator"),
    pytest.param("1,234,567", "1234567", id="several-separators"),
    pytest.param("7.0", "7", id="trailing-point-zero"),
    pytest.param("7.50", "7.5", id="trailing-zero"),
    pytest.param("0.50", "0.5", id="leading-zero-decimal"),
    pytest.param(".5", "0.5", id="bare-decimal-point"),
    pytest.param("007", "7", id="leading-zeros"),
    pytest.param("$7", "7", id="dollar"),
    pytest.param("$1,000.00", "1000", id="dollars-and-cents"),
    pytest.param("-3", "-3", id="negative"),
    pytest.param("−5", "-5", id="unicode-minus"),
    pytest.param("+3", "3", id="explicit-plus"),
    pytest.param("3 apples", "3", id="with-unit"),
    pytest.param("50%", "50", id="percent"),
    pytest.param("**28**", "28", id="markdown-bold"),
    pytest.param("x = 12", "12", id="assignment"),
    pytest.param("64-36=28", "28", id="equation"),
    pytest.param("The answer is 42.", "42", id="the-answer-is"),
    pytest.param("Each group has 7 students.", "7", id="number-in-a-sentence"),
    pytest.param("2\n\nShe had 41 pictures and put 37 of them into one album.", "2",
                 id="leading-answer-then-explanation"),
    pytest.param("64 - 36 = 28 students were left, and 28 / 4 = 7 students per group.", "7",
                 id="calculation-last-number"),
    pytest.param("```python\nanswer = (64 - 36) // 4\nprint(f'The answer is {answer}')\n```\n\n7", "7",
                 id="code-block-then-number"),
    pytest.param("3/4", "0.75", id="fraction-terminating"),
    pytest.param("6/3", "2", id="fraction-whole"),
    pytest.param("\\frac{3}{4}", "0.75", id="latex-fraction"),
    pytest.param("1/3", Reason.NOT_A_NUMBER, id="fraction-repeating"),
    pytest.param("5/0", Reason.NOT_A_NUMBER, id="fraction-by-zero"),
    pytest.param("1e3", Reason.NOT_A_NUMBER, id="scientific-notation"),
    pytest.param("1,5", Reason.NOT_A_NUMBER, id="decimal-comma"),
    pytest.param("7:30", Reason.NOT_A_NUMBER, id="time-of-day"),
    pytest.param("seven", Reason.NOT_A_NUMBER, id="number-as-word"),
    pytest.param("abc", Reason.NOT_A_NUMBER, id="fake-teacher-wrong-answer"),
    pytest.param("The answer is seven.", Reason.NOT_A_NUMBER, id="answer-is-word"),
    pytest.param("Answer: between 6 and 8", Reason.NOT_A_NUMBER, id="answer-is-range"),
    pytest.param("I cannot solve this without knowing how many students there were.", Reason.NO_ANSWER,
                 id="no-number-in-prose"),
    pytest.param("```python\nprint((64 - 36) // 4)\n```", Reason.NO_ANSWER, id="only-code"),
]

MATH_COT = [
    pytest.param('{"reasoning": "64 - 36 = 28 and 28 / 4 = 7.", "answer": 7}', "7", id="json-number"),
    pytest.param('{"reasoning": "28 / 4 = 7.", "answer": "7"}', "7", id="json-string"),
    pytest.param('{"reasoning": "28 / 4 = 7.", "answer": 7.0}', "7", id="json-float"),
    pytest.param('{"reasoning": "28 / 4 = 7.", "answer": "7 students"}', "7", id="json-with-unit"),
    pytest.param('{"reasoning": "5 x 250 = 1,250.", "answer": "$1,250"}', "1250", id="json-dollars"),
    pytest.param('{"reasoning": "He has 5 - 8 = -3 dollars.", "answer": -3}', "-3", id="json-negative"),
    pytest.param("{'reasoning': 'Half of 15 is 7.5.', 'answer': 7.5, 'confident': True}", "7.5",
                 id="python-literals"),
    pytest.param('{"reasoning": "Three quarters.", "answer": 3/4}', "0.75", id="arithmetic-in-json"),
    pytest.param('{"reasoning": "Each group gets \\frac{28}{4} = 7.", "answer": "\\boxed{7}"}', "7",
                 id="unescaped-latex-in-json"),
    pytest.param('{"result": {"reasoning": "28 / 4.", "answer": 7}}', "7", id="nested-object"),
    pytest.param('The format is {"reasoning": "...", "answer": 0}. '
                 'Mine: {"reasoning": "28 / 4 = 7", "answer": 7}', "7", id="last-json-wins"),
    pytest.param('{"reasoning": "Using {a} + {b} with a stray { brace", "answer": 12}', "12",
                 id="braces-inside-strings"),
    pytest.param('Stray { brace first. Then {"reasoning": "ok", "answer": 12}', "12",
                 id="stray-brace-before"),
    pytest.param("We start with 64 students. 36 are not picked, leaving 28. Four groups of 28 gives "
                 "\\boxed{7}.", "7", id="boxed"),
    pytest.param("Sharing 28 among 4 groups gives \\boxed{\\dfrac{28}{4}}", "7", id="boxed-fraction"),
    pytest.param("The final answer is: $\\boxed{1,250}$", "1250", id="boxed-in-dollars"),
    pytest.param("Let's compute: 64 - 36 = 28; 28 / 4 = 7.\n\n**Final Answer:** 7", "7",
                 id="final-answer-line"),
    pytest.param('```python\nprint((64 - 36) // 4)\n```\n```json\n{"reasoning": "28 // 4 = 7", "answer": 7}\n'
                 "```", "7", id="code-block-and-json"),
    pytest.param("```python\nstudents = 64 - 36\nprint(students // 4)\n```\nOutput: 7", "7",
                 id="code-block-and-output"),
    pytest.param("1. 64 - 36 = 28 students remain.\n2. 28 / 4 = 7 per group.\nSo each group has 7 students.",
                 "7", id="numbered-steps"),
    pytest.param("### Step 1\n64 - 36 = 28\n### Step 2\n28 / 4 = 7", "7", id="markdown-step-headings"),
    pytest.param('{"reasoning": "It is seven.", "answer": "seven"}', Reason.NOT_A_NUMBER, id="json-word"),
    pytest.param('{"reasoning": "One of three.", "answer": "1/3"}', Reason.NOT_A_NUMBER,
                 id="json-repeating-fraction"),
    pytest.param('{"reasoning": "Unclear.", "answer": "abc"}', Reason.NOT_A_NUMBER, id="json-letters"),
    pytest.param('{"reasoning": "Unclear.", "answer": true}', Reason.NOT_A_NUMBER, id="json-boolean"),
    pytest.param(UNTERMINATED, Reason.INVALID_JSON, id="unterminated-json"),
    pytest.param("I need more information to answer this question.", Reason.INVALID_JSON,
                 id="prose-without-number"),
]


@pytest.mark.parametrize("reply,expected", MATH_PLAIN)
def test_math_plain_replies(reply: str, expected: str | Reason) -> None:
    check(parse(Task.MATH, reply, question=MATH_QUESTION), expected)


@pytest.mark.parametrize("reply,expected", MATH_COT)
def test_math_chain_of_thought_replies(reply: str, expected: str | Reason) -> None:
    check(parse(Task.MATH, reply, COT, question=MATH_QUESTION), expected)


# --- reasoning ---------------------------------------------------------------------------------------------
REASONING = [
    pytest.param(Task.MATH, COT, '{"reasoning": "64 - 36 = 28; 28 / 4 = 7.", "answer": 7}', "7",
                 "64 - 36 = 28; 28 / 4 = 7.", id="json-reasoning"),
    pytest.param(Task.NLU_QA, COT, '{"reason": "Banks keep money.", "answer_choice": "A"}', "A",
                 "Banks keep money.", id="managed-service-reason"),
    pytest.param(Task.MATH, COT, '{"reasoning": ["64 - 36 = 28", "28 / 4 = 7"], "answer": 7}', "7",
                 "64 - 36 = 28\n28 / 4 = 7", id="reasoning-as-list-of-steps"),
    pytest.param(Task.NLI, COT, '{"reasoning": "It says "born in Illinois" too.", "answer": "entailment"}',
                 "entailment", 'It says "born in Illinois" too.', id="salvaged-from-broken-json"),
    pytest.param(Task.MATH, PLAIN, "64 - 36 = 28 students are left.\n28 / 4 = 7.\nAnswer: 7", "7",
                 "64 - 36 = 28 students are left.\n28 / 4 = 7.", id="step-by-step-answer-line"),
    pytest.param(Task.NLI, PLAIN, "He was born in Illinois in both texts.\nThe answer is entailment.",
                 "entailment", "He was born in Illinois in both texts.", id="the-answer-is-line"),
    pytest.param(Task.MATH, COT, "{'reasoning': None, 'answer': 12}", "12", None, id="json-null-reasoning"),
    pytest.param(Task.MATH, COT, '{"reasoning": "Each group gets \\frac{28}{4} = 7.", '
                 '"answer": "\\boxed{7}"}', "7", "Each group gets \\frac{28}{4} = 7.",
                 id="latex-not-read-as-json-escapes"),
    pytest.param(Task.NLI, COT, '{"reasoning": "Line one.\nLine two.", "answer": "neutral",}', "neutral",
                 "Line one.\nLine two.", id="raw-newline-and-trailing-comma"),
    pytest.param(Task.NLI, COT, "{'reasoning': 'He said \\'no\\', twice.', 'answer': 'contradiction'}",
                 "contradiction", "He said 'no', twice.", id="python-dict-with-escaped-quotes"),
    pytest.param(Task.NLI, COT, '{reasoning: "The texts agree.", answer: entailment}', "entailment",
                 "The texts agree.", id="unquoted-keys"),
    pytest.param(Task.MATH, PLAIN, "7", "7", None, id="bare-answer"),
    pytest.param(Task.MATH, PLAIN, "28 / 4 gives 7, so the answer is 7.", "7", "28 / 4 gives 7, so the answer is 7.",
                 id="answer-is-mid-line"),
    pytest.param(Task.MATH, PLAIN, "So the answer is 7.", "7", None, id="answer-is-alone"),
    pytest.param(Task.MATH, COT, "28 / 4 = 7, so \\boxed{7}", "7", "28 / 4 = 7, so \\boxed{7}", id="boxed"),
    pytest.param(Task.MATH, COT, "They picked 26 + 15 = 41 carrots.\n41 - 16 = 25 were bad.", "25",
                 "They picked 26 + 15 = 41 carrots.\n41 - 16 = 25 were bad.", id="free-reasoning-in-cot"),
    pytest.param(Task.NLU_QA, PLAIN, "B) bank\nBanks keep money.", "B", None, id="answer-first-line"),
]


@pytest.mark.parametrize("task,prompt,reply,answer,reasoning", REASONING)
def test_reasoning_is_kept_when_the_teacher_gave_it(task: Task, prompt: PromptSettings, reply: str,
                                                     answer: str, reasoning: str | None) -> None:
    assert parse(task, reply, prompt, question=QA5) == Accepted(answer, reasoning)


# --- SUMMARIZATION -----------------------------------------------------------------------------------------
SUMMARY = ("Prince Charles will break with the Queen's discretion as King and keep speaking out on the "
           "environment, farming and architecture, The Guardian reports, citing an unnamed source.")


def words(count: int) -> str:
    return " ".join(f"word{i}" for i in range(count))


def steps(*summaries: str, key: str = "denser_summary") -> list[dict[str, str]]:
    return [{"missing_entities": "x", key: summary} for summary in summaries]


SUMMARY_PLAIN = [
    pytest.param(SUMMARY, SUMMARY, id="bare-summary"),
    pytest.param(f"  {SUMMARY}\n\n", SUMMARY, id="surrounding-white-space"),
    pytest.param(f"Summary: {SUMMARY}", SUMMARY, id="summary-prefix"),
    pytest.param(f"**Summary:** {SUMMARY}", SUMMARY, id="bold-summary-prefix"),
    pytest.param(f"Here is a concise, entity-dense summary of the article:\n\n{SUMMARY}", SUMMARY,
                 id="chatty-lead-in"),
    pytest.param(f'"{SUMMARY}"', SUMMARY, id="double-quoted"),
    pytest.param(f"“{SUMMARY}”", SUMMARY, id="curly-quoted"),
    pytest.param("\"Charles will 'speak out' as King, aides say.\"",
                 "Charles will 'speak out' as King, aides say.", id="quoted-with-inner-quotes"),
    pytest.param('Aides say "Charles will speak out"', 'Aides say "Charles will speak out"',
                 id="ends-with-a-quotation"),
    pytest.param(words(80), words(80), id="exactly-the-limit"),
    pytest.param(words(81), Reason.TOO_LONG, id="one-word-over-the-limit"),
    pytest.param("Summary:", Reason.NO_ANSWER, id="lead-in-only"),
]

SUMMARY_DENSITY = [
    pytest.param(steps("s1", "s2 longer", "s3 denser", SUMMARY), SUMMARY, id="four-steps"),
    pytest.param(steps("s1", "s2", "s3", SUMMARY, key="Denser_Summary"), SUMMARY, id="managed-service-keys"),
    pytest.param(steps("s1", "s2", "s3", SUMMARY, key="Denser Summary"), SUMMARY, id="spaced-key"),
    pytest.param({"summaries": steps("s1", "s2", SUMMARY)}, SUMMARY, id="object-wrapping-the-list"),
    pytest.param(steps("s1", "s2", SUMMARY, ""), SUMMARY, id="last-step-empty"),
    pytest.param(steps("s1", "s2", "s3", words(81)), Reason.TOO_LONG, id="last-summary-too-long"),
    pytest.param([{"missing_entities": "Charles"}], Reason.INVALID_JSON, id="steps-without-summaries"),
]

SUMMARY_DENSITY_TEXT = [
    pytest.param("Here are the summaries:\n```json\n" + json.dumps(steps("s1", "s2"), indent=2) + "\n```",
                 "s2", id="fenced-with-lead-in"),
    pytest.param("[{'missing_entities': 'Queen', 'denser_summary': 's1',}, "
                 "{'missing_entities': 'Guardian', 'denser_summary': 's2',},]", "s2",
                 id="single-quotes-trailing-commas"),
    pytest.param('[{"missing_entities": "Guardian", "denser_summary": "Charles will "speak out" as King."}, '
                 '{"missing_entities": "farming", '
                 '"denser_summary": "Charles, King, will "speak out" on farming."}]',
                 'Charles, King, will "speak out" on farming.', id="unescaped-quotes-salvaged"),
    pytest.param(SUMMARY, Reason.INVALID_JSON, id="prose-instead-of-json"),
    pytest.param('[{"missing_entities": "Queen", "denser_summary": "Charles', Reason.INVALID_JSON,
                 id="unterminated"),
]


@pytest.mark.parametrize("reply,expected", SUMMARY_PLAIN)
def test_plain_summaries(reply: str, expected: str | Reason) -> None:
    check(parse(Task.SUMMARIZATION, reply), expected)


@pytest.mark.parametrize("value,expected", SUMMARY_DENSITY)
def test_chain_of_density_json(value: object, expected: str | Reason) -> None:
    check(parse(Task.SUMMARIZATION, json.dumps(value), COD), expected)


@pytest.mark.parametrize("reply,expected", SUMMARY_DENSITY_TEXT)
def test_chain_of_density_text(reply: str, expected: str | Reason) -> None:
    check(parse(Task.SUMMARIZATION, reply, COD), expected)


def test_the_summary_limit_comes_from_the_prompt_settings() -> None:
    short = PromptSettings(max_len_summary=10)
    check(parse(Task.SUMMARIZATION, words(10), short), words(10))
    result = parse(Task.SUMMARIZATION, words(11), short)
    assert isinstance(result, Rejected) and result.reason is Reason.TOO_LONG
    assert result.detail == "the summary has 11 words, more than the limit of 10"


# --- CONVERSATION ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,expected", [
    pytest.param("  You can open a demat account with any registered broker.\n",
                 "You can open a demat account with any registered broker.", id="trimmed"),
    pytest.param('Sure! Step 1: {"open": "demat account"}\n\nStep 2: place orders.',
                 'Sure! Step 1: {"open": "demat account"}\n\nStep 2: place orders.', id="kept-as-written"),
])
def test_conversation_replies_are_kept_trimmed(reply: str, expected: str) -> None:
    check(parse(Task.CONVERSATION, reply), expected)


# --- every task --------------------------------------------------------------------------------------------
GOOD_REPLY = {Task.NLI: "neutral", Task.NLU_QA: "A", Task.MATH: "7", Task.SUMMARIZATION: SUMMARY,
              Task.CONVERSATION: "Happy to help."}


@pytest.mark.parametrize("task", list(Task))
@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_a_reply_that_did_not_stop_is_truncated(task: Task, finish: str) -> None:
    result = parse(task, GOOD_REPLY[task], question=QA5, finish=finish)
    assert isinstance(result, Rejected) and result.reason is Reason.TRUNCATED
    assert finish in result.detail


@pytest.mark.parametrize("task", list(Task))
def test_a_missing_finish_reason_counts_as_stop(task: Task) -> None:
    check(parse(task, GOOD_REPLY[task], question=QA5, finish=None), GOOD_REPLY[task])


@pytest.mark.parametrize("task", list(Task))
@pytest.mark.parametrize("content", [None, "", "   \n\t ", "<think>Let me see.</think>\n"],
                         ids=["none", "empty", "white-space", "think-only"])
def test_a_reply_without_text_is_empty(task: Task, content: str | None) -> None:
    result = parse(task, content, question=QA5)
    assert isinstance(result, Rejected) and result.reason is Reason.EMPTY


def test_truncation_is_reported_before_emptiness() -> None:
    result = parse(Task.NLI, "", finish="length")
    assert isinstance(result, Rejected) and result.reason is Reason.TRUNCATED


@pytest.mark.parametrize("task,prompt,reply,expected", [
    pytest.param(Task.NLI, COT, json.dumps({"reasoning": "Weighed each label.", "answer": "contradiction"}),
                 "contradiction", id="nli-cot"),
    pytest.param(Task.MATH, COT, json.dumps({"reasoning": "Worked it out.", "answer": 7}), "7",
                 id="math-cot-int"),
    pytest.param(Task.MATH, COT, json.dumps({"reasoning": "Worked it out.", "answer": 7.5}), "7.5",
                 id="math-cot-float"),
    pytest.param(Task.NLU_QA, COT, json.dumps({"reasoning": "Only one fits.", "answer": "Z"}),
                 Reason.INVALID_CHOICE, id="qa-cot-wrong-letter"),
    pytest.param(Task.SUMMARIZATION, COD, json.dumps(steps("a", "a b", "a b c", SUMMARY)), SUMMARY,
                 id="cod"),
])
def test_replies_in_the_exact_format_our_prompts_ask_for(task: Task, prompt: PromptSettings, reply: str,
                                                          expected: str | Reason) -> None:
    check(parse(task, reply, prompt, question=QA5), expected)


@pytest.mark.parametrize("reply", [
    pytest.param("{[" * 3000 + '"' + "x, " * 5000 + "\\boxed{" * 2000, id="unclosed-brackets-and-boxes"),
    pytest.param("[" * 20000 + "]" * 20000, id="deeply-nested-lists"),
    pytest.param('{"a": ' * 3000 + "0" + "}" * 3000, id="deeply-nested-objects"),
])
def test_degenerate_replies_parse_quickly(reply: str) -> None:
    started = time.perf_counter()
    result = parse(Task.NLI, reply, COT)
    assert isinstance(result, Rejected) and result.reason is Reason.INVALID_JSON
    assert time.perf_counter() - started < 3


# --- rejection reports -------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,question,reply,detail", [
    pytest.param(Task.NLI, NLI_QUESTION, "maybe",
                 "label 'maybe' is not one of entailment, contradiction, neutral", id="nli"),
    pytest.param(Task.NLU_QA, QA3, "D", "choice 'D' is not one of the question's options A, B, C", id="qa"),
    pytest.param(Task.MATH, MATH_QUESTION, "seven", "answer 'seven' is not a plain number", id="math"),
    pytest.param(Task.MATH, MATH_QUESTION, "1/3", "answer '1/3' has no exact decimal value", id="fraction"),
])
def test_a_rejection_says_what_was_wrong(task: Task, question: str, reply: str, detail: str) -> None:
    result = parse(task, reply, question=question)
    assert isinstance(result, Rejected)
    assert result.detail == detail
    assert result.excerpt == reply


def test_a_rejection_carries_the_start_of_the_reply_on_one_line() -> None:
    reply = "I am not sure.\n\n" + "Let me think about it some more. " * 20
    result = parse(Task.NLI, reply, question=NLI_QUESTION)
    assert isinstance(result, Rejected) and result.reason is Reason.NO_ANSWER
    assert result.excerpt.startswith("I am not sure. Let me think")
    assert len(result.excerpt) <= 200 and result.excerpt.endswith("about…")


# --- excerpt -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,limit,expected", [
    pytest.param(None, 200, "", id="none"),
    pytest.param("", 200, "", id="empty"),
    pytest.param("a\n\n b\tc  ", 200, "a b c", id="white-space-collapsed"),
    pytest.param("x" * 200, 200, "x" * 200, id="exactly-the-limit"),
    pytest.param("x" * 201, 200, "x" * 199 + "…", id="one-over-the-limit"),
    pytest.param("hello wonderful world", 10, "hello won…", id="cut-mid-word"),
    pytest.param("hello world foo", 7, "hello…", id="no-space-before-ellipsis"),
])
def test_excerpt(text: str | None, limit: int, expected: str) -> None:
    result = excerpt(text, limit)
    assert result == expected
    assert len(result) <= limit


def test_excerpt_needs_room_for_one_character() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        excerpt("text", 0)
