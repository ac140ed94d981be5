"""Splitting long replies and escaping Slack text."""

from __future__ import annotations

import pytest

from bot.adapters.text import escape_slack, split_text


def test_short_text_is_one_post_and_empty_text_none() -> None:
    assert split_text("  hello  ", 100) == ["hello"]
    assert split_text("   ", 100) == []


@pytest.mark.parametrize("limit", [2000, 3900])
def test_long_prose_splits_between_words_and_loses_nothing(limit: int) -> None:
    words = [f"word{i}" for i in range(2000)]
    text = " ".join(words)  # 10,000+ characters, one paragraph, one line
    posts = split_text(text, limit)
    assert all(len(post) <= limit for post in posts)
    assert " ".join(posts).split() == words


def test_paragraphs_are_kept_together_when_they_fit() -> None:
    paragraphs = [f"p{i} " * 60 for i in range(10)]
    posts = split_text("\n\n".join(paragraphs), 500)
    assert all(len(post) <= 500 for post in posts)
    assert [p.strip() for post in posts for p in post.split("\n\n")] == [
        p.strip() for p in paragraphs
    ]


def test_a_code_block_that_fits_is_never_split() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(40)) + "\n```"
    text = "intro " * 80 + "\n\n" + code + "\n\n" + "outro " * 80
    posts = split_text(text, 600)
    assert any(code in post for post in posts)
    assert all(len(post) <= 600 for post in posts)


def test_a_code_block_too_long_for_one_post_is_refenced() -> None:
    code = "```sh\n" + "\n".join(f"echo line {i}" for i in range(300)) + "\n```"
    posts = split_text(code, 500)
    assert len(posts) > 1
    for post in posts:
        assert post.startswith("```sh\n") and post.endswith("\n```") and len(post) <= 500
    lines = [line for post in posts for line in post.split("\n")[1:-1]]
    assert lines == [f"echo line {i}" for i in range(300)]


def test_a_word_longer_than_the_limit_is_cut() -> None:
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<!channel> hi", "&lt;!channel&gt; hi"),
        ("<!here> <!everyone>", "&lt;!here&gt; &lt;!everyone&gt;"),
        ("ping <@U123>", "ping &lt;@U123&gt;"),
        ("<https://evil.example|click>", "&lt;https://evil.example|click&gt;"),
        ("fish & chips", "fish &amp; chips"),
        ("&lt; already", "&amp;lt; already"),
    ],
)
def test_escape_slack(text: str, escaped: str) -> None:
    assert escape_slack(text) == escaped
