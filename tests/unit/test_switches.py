"""A switch read from the environment: its first word when unset, a wrong word an error that
names the variable and every word it takes."""
import pytest

from pipeline.errors import SwitchError
from pipeline.switches import env_choice


def test_unset_is_the_first_word_and_a_set_word_is_taken(monkeypatch):
    monkeypatch.delenv("FLAVR_TEST_SWITCH", raising=False)
    assert env_choice("FLAVR_TEST_SWITCH", ("fast", "safe", "off")) == "fast"
    monkeypatch.setenv("FLAVR_TEST_SWITCH", "off")
    assert env_choice("FLAVR_TEST_SWITCH", ("fast", "safe", "off")) == "off"


def test_a_wrong_word_is_an_error_naming_the_variable_and_the_words(monkeypatch):
    monkeypatch.setenv("FLAVR_TEST_SWITCH", "Fast")
    with pytest.raises(SwitchError) as e:
        env_choice("FLAVR_TEST_SWITCH", ("fast", "safe", "off"))
    assert str(e.value) == ("environment variable FLAVR_TEST_SWITCH='Fast': expected 'fast', "
                            "'safe' or 'off'")
