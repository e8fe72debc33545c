"""Kubernetes' own value grammars as field types: names, label keys and values, annotation
keys, quantities, image references.

Each type carries its rule twice: as schema (a pattern, or a CEL rule where a pattern cannot
say it) that the API server checks at `kubectl apply`, and as a validator the model runs on
what the operator reads. The two must agree: a value the API server stores is one the
operator can build a child from, and the API server then accepts that child.

Patterns are RE2 (the API server) and Rust regex (pydantic): only ASCII classes, anchored,
and `$` meaning the end of the text in both. Python's `re` is used only with `fullmatch`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import ROUND_UP, Context, Decimal, localcontext
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, JsonValue, WithJsonSchema

from inferops.api.base import JsonDict, cel

V = TypeVar("V")

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# RFC 1123 label, the rule for names of Secrets, PVCs and label values used here.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1035 label: Service names (must start with a letter).
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain: names of most namespaced objects (Secrets, PVCs), StorageClasses,
# RuntimeClasses, nodes.
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS_SUBDOMAIN_PATTERN = f"^{_SUBDOMAIN}$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""The name of a Kubernetes object (a DNS subdomain of at most 253 characters)."""

NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""The name of a namespace (a DNS label of at most 63 characters)."""

# A label key ("qualified name"): an optional DNS subdomain prefix and '/', then a name of at
# most 63 letters, digits, '-', '_' and '.', starting and ending alphanumeric. Kubernetes
# bounds the prefix at 253 characters; a regular expression cannot, so the whole key is
# bounded at 253 instead (stricter by the few keys with a prefix over 189 characters).
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = f"^({_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_KEY_MAX = 253
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_VALUE_MAX = 63
LABEL_KEY_HELP = (
    "an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or "
    "'.', starting and ending with a letter or digit (e.g. example.com/pool)"
)

LabelKey = Annotated[str, Field(min_length=1, max_length=LABEL_KEY_MAX, pattern=LABEL_KEY_PATTERN)]
"""A label key, also the grammar of topology keys and toleration keys."""

LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN)]
"""A label value: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending
with a letter or digit."""

# A Secret's (or ConfigMap's) key: no '/', not '.' and not starting with '..' (the kubelet
# writes keys as file names).
CONFIG_KEY_PATTERN = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"

# What Go's strings.TrimSpace removes (unicode.IsSpace), which is what the API server refuses
# at either end of a container image. Inside, anything goes, as for the API server.
_GO_SPACE = (
    r"\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
)
IMAGE_PATTERN = f"(?s)^[^{_GO_SPACE}](.*[^{_GO_SPACE}])?$"
IMAGE_MESSAGE = "must not start or end with whitespace"


def _python(pattern: str) -> re.Pattern[str]:
    """A schema pattern for Python's `re` (which writes `\\x{85}` as `\\x85`)."""
    python = re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: f"\\u{int(m[1], 16):04x}", pattern)
    return re.compile(python)


_LABEL_KEY_RE = _python(LABEL_KEY_PATTERN)


def checked_string(pattern: str, message: str, min_length: int, max_length: int) -> Any:
    """A string of a grammar whose refusal should say more than "should match <regex>":
    checked by a CEL rule with `message` at the API server, by the same pattern here."""
    grammar = _python(pattern)

    def check(value: str) -> str:
        if grammar.fullmatch(value) is None:
            raise ValueError(f"{value!r} {message}")
        return value

    schema: JsonDict = {
        "type": "string",
        "minLength": min_length,
        "maxLength": max_length,
        "x-kubernetes-validations": [cel(f"self.matches(r'{pattern}')", message)],
    }
    length = Field(min_length=min_length, max_length=max_length)
    return Annotated[str, length, AfterValidator(check), WithJsonSchema(schema)]


Image = checked_string(IMAGE_PATTERN, IMAGE_MESSAGE, min_length=1, max_length=1024)
"""A container image reference, without whitespace at either end."""

StorageClassName = checked_string(
    f"^$|{DNS_SUBDOMAIN_PATTERN}",
    "must be the name of a StorageClass (a DNS subdomain: lower-case letters, digits, '-' "
    "and '.', starting and ending with a letter or digit), or empty for no class",
    min_length=0,
    max_length=253,
)
"""The name of a StorageClass, or empty for none."""


# OLLAMA_KEEP_ALIVE: -1 (forever), or a Go duration (`5m`, `1h30m`, `300s`); Ollama also reads
# a bare number as seconds.
KEEP_ALIVE_PATTERN = r"^(-1|[0-9]+|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$"

KeepAlive = checked_string(
    KEEP_ALIVE_PATTERN,
    "is not a keep-alive: use -1 (keep the model loaded for good), a Go duration such as "
    "30m or 1h30m, or a number of seconds",
    min_length=1,
    max_length=32,
)
"""How long Ollama keeps a model loaded after its last request."""


def is_label_key(key: str) -> bool:
    return len(key) <= LABEL_KEY_MAX and _LABEL_KEY_RE.fullmatch(key) is not None


def _is_annotation_key(key: str) -> bool:
    # Kubernetes lower-cases annotation keys before the label-key check; ASCII only, as CEL's
    # lowerAscii() does (Go's ToLower would also fold e.g. the Kelvin sign into 'k').
    return is_label_key(key.translate(_ASCII_LOWER))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def keyed_map(
    value: Any,
    check: Callable[[str], bool],
    rule: str,
    message: str,
    max_items: int,
) -> Any:
    """A map whose keys follow a grammar: the model checks each key with `check`, the API
    server with the CEL `rule` (structural schemas cannot constrain map keys otherwise)."""

    def keys(mapping: dict[str, V]) -> dict[str, V]:
        if len(mapping) > max_items:
            raise ValueError(f"at most {max_items} entries")
        bad = [key for key in mapping if not check(key)]
        if bad:
            raise ValueError(f"{', '.join(repr(k) for k in bad)}: {message}")
        return mapping

    # maxProperties also bounds the CEL rule's cost, which the API server estimates.
    schema: JsonDict = {
        "maxProperties": max_items,
        "x-kubernetes-validations": [cel(rule, message)],
    }
    return Annotated[dict[str, value], AfterValidator(keys), Field(json_schema_extra=schema)]


_CEL_LABEL_KEY = f"size(k) <= {LABEL_KEY_MAX} && k.matches(r'{LABEL_KEY_PATTERN}')"

LabelMap = keyed_map(
    LabelValue,
    is_label_key,
    f"self.all(k, {_CEL_LABEL_KEY})",
    f"keys must be label keys: {LABEL_KEY_HELP}",
    max_items=64,
)
"""Labels (node selectors, label selectors): label keys to label values."""

AnnotationMap = keyed_map(
    Annotated[str, Field(max_length=65536)],
    _is_annotation_key,
    f"self.all(k, size(k) <= {LABEL_KEY_MAX} && k.lowerAscii().matches(r'{LABEL_KEY_PATTERN}'))",
    f"keys must be annotation keys: {LABEL_KEY_HELP}, any case",
    max_items=64,
)
"""Annotations: annotation keys to any text."""


# -- quantities ------------------------------------------------------------------------------

# Kubernetes' quantity grammar (k8s.io/apimachinery resource.Quantity), with the exponent
# restricted to one or two digits: the API server's own pattern also admits `1e1.5` or
# `1e99999999999999999999`, which its parser then refuses.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
QUANTITY_MAX_LENGTH = 64
_QUANTITY_RE = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?"
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_NANO = Decimal("1e-9")
# Enough digits for any quantity the grammar admits (64 characters, exponents up to 99).
_EXACT = Context(prec=400)


def quantity_value(quantity: int | str) -> Decimal:
    """The amount a quantity stands for, as the API server's parser reads it: rounded up to
    a billionth, and a binary-suffixed amount capped at 2^63-1 (so that comparisons agree
    with the API server's, e.g. requests against limits)."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    match = _QUANTITY_RE.fullmatch(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    suffix = match["suffix"] or ""
    with localcontext(_EXACT):
        amount = Decimal(match["number"])
        if suffix in _BINARY:
            amount *= 2 ** _BINARY[suffix]
        elif suffix in _DECIMAL:
            amount = amount.scaleb(_DECIMAL[suffix])
        elif suffix:
            amount = amount.scaleb(int(suffix[1:]))
        amount = amount.quantize(_NANO, rounding=ROUND_UP) if amount else amount
        if suffix in _BINARY:
            amount = min(amount, Decimal(INT64_MAX))
        return -amount if match["sign"] == "-" else amount


_QUANTITY_GRAMMAR = _python(QUANTITY_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and (
        len(value) > QUANTITY_MAX_LENGTH or _QUANTITY_GRAMMAR.fullmatch(value) is None
    ):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 16Gi, 500m, 2)")
    if isinstance(value, int) and value > INT64_MAX:
        raise ValueError(f"{value} is too large: at most {INT64_MAX}")
    return value


def _check_not_negative(value: int | str) -> int | str:
    if str(value).startswith("-"):
        raise ValueError(f"{value!r} is negative: a quantity here is 0 or more (e.g. 16Gi)")
    return value


def _check_positive(value: int | str) -> int | str:
    if quantity_value(value) <= 0:
        raise ValueError(f"{value!r} must be greater than zero (e.g. 16Gi)")
    return value


_NOT_NEGATIVE = cel(
    "!string(self).startsWith('-')", "must not be negative: a quantity here is 0 or more"
)
_POSITIVE = cel(
    "!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))",
    "must be greater than zero (e.g. 16Gi)",
)


def _quantity_schema(*rules: JsonDict) -> JsonDict:
    validations: list[JsonValue] = list(rules)
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "maxLength": QUANTITY_MAX_LENGTH,
        "x-kubernetes-int-or-string": True,
        "x-kubernetes-validations": validations,
    }


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    AfterValidator(_check_not_negative),
    WithJsonSchema(_quantity_schema(_NOT_NEGATIVE)),
]
"""A Kubernetes resource quantity of 0 or more, such as `16Gi`, `500m` or `2`."""

PositiveQuantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    AfterValidator(_check_positive),
    WithJsonSchema(_quantity_schema(_POSITIVE)),
]
"""A Kubernetes resource quantity greater than zero (a volume's size)."""

# The resources a container may ask for here; GPUs have their own fields.
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
_RESOURCE_HELP = (
    "resources may name cpu, memory and ephemeral-storage only: set GPUs with "
    "vllm.tensorParallelSize (GPUs per pod) or ollama.gpus"
)

ResourceList = keyed_map(
    Quantity,
    lambda key: key in RESOURCE_NAMES,
    f"self.all(k, k in {list(RESOURCE_NAMES)})",
    _RESOURCE_HELP,
    max_items=len(RESOURCE_NAMES),
)
"""Amounts of cpu, memory and ephemeral-storage."""


__all__ = [
    "DNS_1035_PATTERN",
    "DNS_LABEL_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "INT32_MAX",
    "INT64_MAX",
    "KEEP_ALIVE_PATTERN",
    "AnnotationMap",
    "Image",
    "KeepAlive",
    "LabelKey",
    "LabelMap",
    "LabelValue",
    "NamespaceName",
    "ObjectName",
    "PositiveQuantity",
    "Quantity",
    "ResourceList",
    "StorageClassName",
    "is_label_key",
    "quantity_value",
]
