"""ROUGE-L on accented, case-folded, CJK and mixed-script text (shared.rouge)."""

from __future__ import annotations

import unicodedata

import pytest

from shared.rouge import rouge_l, rouge_tokens


def test_accents_belong_to_their_word() -> None:
    assert rouge_l("Le resume du café est prêt", "Le résumé du café est prêt") == pytest.approx(5 / 6)
    assert rouge_l("Tôi đi chợ mua cà", "Tôi đi chợ mua cá") == pytest.approx(4 / 5)  # eggplant, not fish
    assert rouge_l("résumé", "resume") == 0.0
    assert rouge_l("Résumé", "résumé") == 1.0


def test_decomposed_accents_equal_composed_ones() -> None:
    composed = "Le café est prêt"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert rouge_l(decomposed, composed) == 1.0
    assert rouge_l("\u03aa\u0301", "\u0390") == 1.0  # Greek upper and lower iota with dialytika and tonos


def test_combining_marks_stay_in_the_word() -> None:
    assert rouge_tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert rouge_l("हिन्दी", "हन्द") == 0.0


def test_case_folding_is_unicode_full_folding() -> None:
    assert rouge_l("STRASSE", "straße") == 1.0  # casefold: "ß" -> "ss"
    assert rouge_l("Die Straße", "die strasse") == 1.0
    assert rouge_l("ΟΔΟΣ", "οδος") == 1.0  # capital, medial and final sigma fold alike
    assert rouge_l("КОШКА сидит", "кошка СИДИТ") == 1.0


@pytest.mark.parametrize("text", ["我喜欢吃苹果", "私は学校に行きます", "나는 학교에 간다", "สวัสดีครับ"])
def test_identical_text_scores_one(text: str) -> None:
    assert rouge_l(text, text) == 1.0


def test_chinese_and_japanese_count_characters() -> None:
    assert rouge_tokens("我喜欢吃苹果。") == ["我", "喜", "欢", "吃", "苹", "果"]
    assert rouge_l("我喜欢吃香蕉", "我喜欢吃苹果") == pytest.approx(4 / 6)
    # 私は図書館に行きます: 10 characters, 私は学校に行きます: 9, 7 in common
    assert rouge_l("私は図書館に行きます", "私は学校に行きます") == pytest.approx(2 * 7 / (10 + 9))
    assert rouge_l("ひらがなとカタカナ", "ひらがな") == pytest.approx(2 * 4 / (9 + 4))
    assert rouge_l("カタカナ", "かたかな") == 0.0  # katakana and hiragana are not folded together


def test_korean_counts_words() -> None:
    assert rouge_tokens("나는 학교에 간다") == ["나는", "학교에", "간다"]
    assert rouge_l("나는 학교로 간다", "나는 학교에 간다") == pytest.approx(2 / 3)  # 6/7 by characters


def test_thai_counts_characters_with_their_marks() -> None:
    assert rouge_tokens("สวัสดี") == ["ส", "วั", "ส", "ดี"]


def test_full_width_forms_equal_ascii_and_half_width_kana_equal_full_width() -> None:
    assert rouge_l("２０２４年", "2024年") == 1.0
    assert rouge_l("ＡＢＣ ｄｅｆ", "abc DEF") == 1.0
    assert rouge_l("ｶﾀｶﾅ", "カタカナ") == 1.0


def test_mixed_scripts() -> None:
    assert rouge_tokens("我用Python写代码, 2024年!") == ["我", "用", "python", "写", "代", "码", "2024", "年"]
    assert rouge_l("我用Python写代码", "我用Java写代码") == pytest.approx(5 / 6)
    assert rouge_l("Le café 很好", "le CAFÉ 很好") == 1.0


@pytest.mark.parametrize("blank", ["", "   \n\t", "...", "。、！？", "\u0301", "🙂 ✓ — ©"])
def test_text_without_tokens_scores_zero(blank: str) -> None:
    assert rouge_tokens(blank) == []
    assert rouge_l(blank, "我喜欢 cats") == 0.0
    assert rouge_l("我喜欢 cats", blank) == 0.0
    assert rouge_l(blank, blank) == 0.0
