"""A generic reader of protobuf's text format (the ``pipeline.config`` files of EasyRec), without a schema.

The text is read into plain Python values: a message is a :class:`Message` (a ``dict`` from field name
to value, in the order of the text, that also remembers where each field was written); a field written
more than once, or with the list syntax ``name: [1, 2]``, is a ``list``; scalars are ``int``, ``float``,
``bool`` (``true`` / ``false``), ``str`` (quoted strings, and enum identifiers such as ``DEEP``).

Accepted syntax (what ``protoc`` and ``google.protobuf.text_format`` accept, less extensions and ``Any``
type URLs)::

    model_dir: "experiments/x"          # a comment
    data_config {                       # a message: `name { ... }`, `name: { ... }` or `name < ... >`
      batch_size: 4096                  # ints: 12, -3, 0x1F, 017 (octal)
      separator: "\\001"                  # strings: '...' or "...", escapes \\n \\t \\\\ \\' \\" \\001 \\x01 \\u00e9
      label_fields: ["clk", "buy"]      # list syntax; `label_fields: "clk" label_fields: "buy"` is the same
    }
    top_mlp { hidden_units: [64, 32] }; embedding_regularization: 5e-05,   # optional `,` / `;` after a field
    note: "adjacent " 'strings ' "concatenate"
    min_val: -inf   ok: true   scale: 1.5f

Which fields are *repeated* is a question of the schema, which this reader does not have: a repeated
field written once comes out as a single value (the caller that knows the schema wraps it in a list,
as :mod:`recstack.easyrec.convert` does). Strings are decoded as UTF-8 after their escapes are applied
(``"\\344\\270\\255"`` is one Chinese character), as protobuf does for ``string`` fields.

Errors are :class:`PbtxtError` (a :class:`~recstack.config.ConfigError`), whose text is
``<source>:<line>:<column>: <what was expected>``, with 1-based line and column.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from typing import Any

from recstack.config import ConfigError

__all__ = ["Message", "PbtxtError", "parse", "parse_file"]

Position = tuple[int, int]  # (line, column), both 1-based


class PbtxtError(ConfigError):
    """A syntax error in protobuf text, at ``line:column`` of ``source``."""

    def __init__(self, message: str, source: str, line: int, column: int) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.reason, self.source, self.line, self.column = message, source, line, column


class Message(dict):
    """A parsed message: field name -> value (a list for a field written more than once), in text order.

    Attributes:
        position: ``(line, column)`` where the message starts (its field name; ``(1, 1)`` for the top level).
        positions: field name -> ``(line, column)`` of the field's first occurrence.
    """

    def __init__(self, position: Position = (1, 1)) -> None:
        super().__init__()
        self.position = position
        self.positions: dict[str, Position] = {}


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "number", "string", "punct", "eof"
    text: str
    offset: int


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<unterminated>["'])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fF]?)(?![A-Za-z0-9_]))
  | (?P<badnumber>\.?\d[A-Za-z0-9_.]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}<>\[\]:,;\-./])
""", re.VERBOSE)

_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
                   "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.DOTALL)
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}
_CLOSE = {"{": "}", "<": ">"}


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.tokens = self._tokenize()
        self.i = 0

    # ------------------------------------------------------------------ positions and errors
    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def error(self, message: str, offset: int) -> PbtxtError:
        line, column = self.position(offset)
        return PbtxtError(message, self.source, line, column)

    def _tokenize(self) -> list[_Token]:
        tokens, pos, end = [], 0, len(self.text)
        while pos < end:
            m = _TOKEN.match(self.text, pos)
            if m is None:
                raise self.error(f"unexpected character {self.text[pos]!r}", pos)
            kind = m.lastgroup
            if kind == "unterminated":
                raise self.error("unterminated string (a string ends on the line it starts)", pos)
            if kind == "badnumber":
                raise self.error(f"malformed number {m.group()!r}", pos)
            if kind != "space":
                tokens.append(_Token(kind, m.group(), pos))
            pos = m.end()
        tokens.append(_Token("eof", "", end))
        return tokens

    # ------------------------------------------------------------------ token stream
    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at(self, *punct: str) -> bool:
        return self.token.kind == "punct" and self.token.text in punct

    def expect(self, punct: str, what: str) -> _Token:
        if not self.at(punct):
            raise self.error(f"expected '{punct}' {what}, got {self.describe(self.token)}", self.token.offset)
        return self.take()

    @staticmethod
    def describe(token: _Token) -> str:
        return "the end of the text" if token.kind == "eof" else repr(token.text)

    # ------------------------------------------------------------------ grammar
    def message(self, position: Position, close: str | None) -> Message:
        """Fields up to ``close`` (``}`` / ``>``) or, at the top level (``close`` None), the end."""
        msg = Message(position)
        listed: set[str] = set()  # fields whose value is already a list
        while True:
            token = self.token
            if close is None and token.kind == "eof":
                return msg
            if close is not None and self.at(close):
                self.take()
                return msg
            if token.kind == "eof":
                raise self.error(f"expected '{close}' to close the message opened at line {position[0]}, "
                                 "got the end of the text", token.offset)
            if self.at("["):
                raise self.error("extensions and Any type URLs ('[...]' field names) are not supported", token.offset)
            if token.kind != "ident":
                raise self.error(f"expected a field name, got {self.describe(token)}", token.offset)
            self.take()
            name, where = token.text, self.position(token.offset)
            values, is_list = self.field_value(name, where)
            if name in msg:
                if name not in listed:
                    msg[name] = [msg[name]]
                    listed.add(name)
                msg[name].extend(values if is_list else [values])
            else:
                msg.positions[name] = where
                msg[name] = values
                if is_list:
                    listed.add(name)
            if self.at(",", ";"):
                self.take()

    def field_value(self, name: str, where: Position) -> tuple[Any, bool]:
        """The value after a field name: ``(value, False)`` or ``(list of values, True)``."""
        colon = self.at(":")
        if colon:
            self.take()
        if self.at("{", "<"):
            opener = self.take()
            return self.message(where, _CLOSE[opener.text]), False
        if self.at("["):
            return self.list_value(name, where, scalars_allowed=colon), True
        if not colon:
            raise self.error(f"expected ':' or '{{' after field name '{name}', got {self.describe(self.token)}",
                             self.token.offset)
        return self.scalar(name), False

    def list_value(self, name: str, where: Position, scalars_allowed: bool) -> list:
        start = self.take()
        items: list = []
        if self.at("]"):
            self.take()
            return items
        while True:
            if self.at("{", "<"):
                opener = self.take()
                items.append(self.message(self.position(opener.offset), _CLOSE[opener.text]))
            elif not scalars_allowed:
                raise self.error(f"expected ':' after field name '{name}' before a list of values",
                                 start.offset)
            else:
                items.append(self.scalar(name))
            if self.at("]"):
                self.take()
                return items
            if self.token.kind == "eof":
                raise self.error(f"expected ']' to close the list opened at line {self.position(start.offset)[0]}, "
                                 "got the end of the text", self.token.offset)
            self.expect(",", f"between the values of '{name}'")

    def scalar(self, name: str) -> Any:
        token = self.take()
        if token.kind == "string":
            parts = [self.string(token)]
            while self.token.kind == "string":  # adjacent strings concatenate
                parts.append(self.string(self.take()))
            return "".join(parts)
        negative = False
        if token.kind == "punct" and token.text == "-":
            negative, token = True, self.take()
            if token.kind not in ("number", "ident"):
                raise self.error(f"expected a number after '-' for field '{name}', got {self.describe(token)}",
                                 token.offset)
        if token.kind == "number":
            value = self.number(token)
            return -value if negative else value
        if token.kind == "ident":
            word = token.text
            if word.lower() in _FLOAT_WORDS:
                value = _FLOAT_WORDS[word.lower()]
                return -value if negative else value
            if negative:
                raise self.error(f"expected a number after '-' for field '{name}', got {word!r}", token.offset)
            if word in ("true", "True"):
                return True
            if word in ("false", "False"):
                return False
            return word  # an enum value
        raise self.error(f"expected a value for field '{name}', got {self.describe(token)}", token.offset)

    def number(self, token: _Token) -> int | float:
        text = token.text
        if text[:2] in ("0x", "0X"):
            return int(text, 16)
        if re.fullmatch(r"\d+", text):
            if len(text) > 1 and text[0] == "0":
                if not re.fullmatch(r"[0-7]+", text):
                    raise self.error(f"invalid octal number {text!r} (a leading 0 means octal)", token.offset)
                return int(text, 8)
            return int(text)
        return float(text.rstrip("fF"))

    def string(self, token: _Token) -> str:
        body = token.text[1:-1]
        out, pos = bytearray(), 0
        for m in _ESCAPE.finditer(body):
            out += body[pos:m.start()].encode("utf-8")
            octal, hex2, u4, u8, other = m.groups()
            if octal is not None:
                value = int(octal, 8)
                if value > 255:
                    raise self.error(f"octal escape '\\{octal}' is above \\377", token.offset + 1 + m.start())
                out.append(value)
            elif hex2 is not None:
                out.append(int(hex2, 16))
            elif u4 is not None or u8 is not None:
                code = int(u4 or u8, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise self.error(f"escape '{m.group()}' is not a Unicode scalar value",
                                     token.offset + 1 + m.start())
                out += chr(code).encode("utf-8")
            elif other in _SIMPLE_ESCAPES:
                out += _SIMPLE_ESCAPES[other]
            else:
                raise self.error(f"unknown escape '\\{other}' in a string", token.offset + 1 + m.start())
            pos = m.end()
        out += body[pos:].encode("utf-8")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self.error(f"the string's bytes after its escapes are not UTF-8 ({err.reason} at byte {err.start})",
                             token.offset) from None


def parse(text: str, source: str = "<text>") -> Message:
    """Parse protobuf text format into a :class:`Message` (see the module docstring).

    Args:
        text: the text (a leading byte-order mark is ignored).
        source: the file name used in error messages.

    Raises:
        PbtxtError: a syntax error, as ``source:line:column: message``.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    parser = _Parser(text, source)
    return parser.message((1, 1), None)


def parse_file(path: str) -> Message:
    """Parse a protobuf text file (UTF-8).

    Raises:
        FileNotFoundError: no such file.
        PbtxtError: a syntax error, or bytes that are not UTF-8 (with their line and column).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise PbtxtError(f"not UTF-8 text: byte 0x{data[err.start]:02x}; save the file as UTF-8", str(path),
                         line, column) from None
    return parse(text, str(path))
