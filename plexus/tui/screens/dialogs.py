"""Modal dialogs: a yes/no confirmation before an action, and a one-line question."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

__all__ = ["Ask", "Confirm"]

DIALOG_CSS = """
Confirm, Ask { align: center middle; }
#dialog { width: 64; height: auto; border: thick $accent; background: $surface; padding: 0 1; }
"""


class Confirm(ModalScreen[bool]):
    """`y` does it, `n` or escape does not."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS: ClassVar = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Static("[b]y[/b] yes   [b]n[/b] no", id="keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class Ask(ModalScreen[str | None]):
    """One line of input: enter gives it, escape gives None."""

    DEFAULT_CSS = DIALOG_CSS
    BINDINGS: ClassVar = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question, self.placeholder, self.value = question, placeholder, value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Static("[b]enter[/b] ok   [b]escape[/b] cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
