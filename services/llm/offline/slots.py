"""Slots: what the customer told us, one small pure extractor per slot, and their validation.

Each public `extract_*` takes the raw message and returns one value or None. `extract_all`
runs them in an order that keeps them from stealing each other's numbers (an e-mail first,
then prices are blanked, then order ids, phones, addresses, sizes and finally quantities, each
blanking what it took), and accepts bare values ("43", "12345") for the slots the agent has
just asked for (`expected`).

Values as stored in the session's entities:
- product: the catalogue entry's fields (id, name, price, currency, stock, sizes...);
- quantity: an int as the customer gave it, even 0 or 150 (validation refuses what cannot be
  ordered, so the customer is asked again instead of getting 1);
- size: "42", "42.5" ("42,5", "42½", "42 y medio", "42 1/2", "9 and a half"; EU, the
  catalogue's system), "10 US" / "8 UK" (kept with the system the customer gave), "M", "XL";
- address: the address line as written ("Calle Mayor 5, 3º B, 28013 Madrid");
- email: lower-cased; phone: "+34612345678" (Spanish numbers), "+<digits>" (international),
  digits (other national numbers, only after a word such as "teléfono");
- order_id: upper-cased ("12345", "A-1002"): after a cue ("pedido", "order #"), bare when the
  agent asked for it, and in a message about an order also after "el número es" / "it's" or
  standing on its own (4 to 12 digits; never a postcode, phone, date or year).

A product remembered by name (a language model's turn) is matched to a catalogue entry with
`resolve_product`, unambiguously or not at all.
"""

import itertools
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.llm.offline.text import blank, fold_aligned, prepare, within_one_edit, word_set

SLOT_NAMES = ("product", "quantity", "size", "address", "email", "phone", "order_id")
TEXT_SLOTS = frozenset(SLOT_NAMES)
MAX_QUANTITY = 99


@dataclass(frozen=True)
class Found:
    """A value and where it was found in the prepared message."""

    value: Any
    start: int
    end: int


# --- e-mail --------------------------------------------------------------------------------

EMAIL = re.compile(
    r"(?<![\w.+-])[a-z0-9](?:[a-z0-9._%+-]*[a-z0-9_%+-])?@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}(?![\w-])",
    re.IGNORECASE,
)


def _find_email(text: str) -> Found | None:
    for match in EMAIL.finditer(text):
        value = match.group(0).lower()
        if ".." not in value:
            return Found(value, match.start(), match.end())
    return None


def extract_email(text: str) -> str | None:
    """ "ana.garcia+tienda@Gmail.com" -> "ana.garcia+tienda@gmail.com"; "ana@gmail" -> None."""
    found = _find_email(prepare(text))
    return found.value if found else None


# --- prices, percentages and durations (never a quantity, size or id) ------------------------

PRICE = re.compile(
    r"(?:[$€£]|\b(?:usd|eur|cop|mxn|gbp)\b)\s?\d+(?:[.,]\d+)*"
    r"|\d+(?:[.,]\d+)*\s?(?:[$€£]|(?:euros?|eur|usd|dolares|dollars?|pesos|cop|mxn|libras|"
    r"pounds?|gbp|pavos|pelas)\b)"
    r"|(?<![\d.,])\d+[.,]\d{2}(?![.,]?\d)"
    r"|\d+\s?%"
)
NUMBER_WORDS: dict[str, int] = {
    "cero": 0,
    "zero": 0,
    "uno": 1,
    "una": 1,
    "un": 1,
    "dos": 2,
    "tres": 3,
    "cuatro": 4,
    "cinco": 5,
    "seis": 6,
    "siete": 7,
    "ocho": 8,
    "nueve": 9,
    "diez": 10,
    "once": 11,
    "doce": 12,
    "quince": 15,
    "veinte": 20,
    "cien": 100,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "hundred": 100,
}
WORD_NUMBER = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
DURATION = re.compile(
    rf"\b(?:\d+|{WORD_NUMBER}|un par de|a couple of|a few|unos|unas)\s+"
    r"(?:dias?|semanas?|meses|mes|horas?|minutos?|anos?|days?|weeks?|months?|hours?|minutes?|"
    r"years?|veces|times|laborables|business days)\b"
)


def _money_and_time(folded: str) -> list[tuple[int, int]]:
    return [m.span() for m in PRICE.finditer(folded)] + [
        m.span() for m in DURATION.finditer(folded)
    ]


# --- order id --------------------------------------------------------------------------------

ORDER_ID = r"[a-z]{0,4}-?\d{3,12}(?:-[a-z0-9]{1,8})?"
ORDER_CUE = re.compile(
    r"\b(?:pedido|pedidos|orden|order|compra|referencia|ref|reference|tracking|seguimiento|"
    r"localizador)\b"
    r"(?:\s*(?:(?:numero|num|nro|n\.o|no|n|number|nr|id|code|codigo|es|is|el|la|de|del|mi|my|"
    r"was|con|with)\b\.?|[#:.º°]))*"
    rf"\s*#?\s*({ORDER_ID})(?![\w-])"
)
ORDER_HASH = re.compile(rf"(?<![\w&])#\s?({ORDER_ID})(?![\w-])")
ORDER_BARE = re.compile(rf"(?<![\w@.,+#-])({ORDER_ID})(?![\w-])(?![.,]\d)")


ORDER_TOPIC = re.compile(
    r"\b(?:pedido|pedidos|orden|order|orders|compra|paquete|package|parcel|envio|shipment|"
    r"delivery|tracking|seguimiento|localizador)\b"
)
"""Words that make a message about an order: then a number given as "el número es 12345" or
"it's 12345" is its id."""
ORDER_CONTEXT_CUE = re.compile(
    r"(?:\b(?:numero|num|nro|number|id|(?<!zip )(?<!postal )(?<!post )code|"
    r"(?<!postal )codigo(?! postal)|referencia|reference|ref)\b\.?"
    r"(?:\s*(?:(?:es|is|was|era|el)\b|[:#º°]))*"
    r"|\b(?:it'?s|it is|that'?s|that is)\b)"
    r"\s*#?\s*([a-z]{0,4}-?\d{4,12}(?:-[a-z0-9]{1,8})?)(?![\w-])(?![.,]\d)"
)

NOT_AN_ORDER_NUMBER = re.compile(
    r"\b(?:postal|zip|postcode|cp|telefono|tel|movil|celular|phone|mobile|cell|dni|nif|cif|"
    r"tarjeta|card|cuenta|account)\b"
)
"""Numbers given as "mi código postal es 28013" or "my phone number is..." are not the order's."""

ORDER_IN_CONTEXT = re.compile(
    r"(?<![\w@.,+#/-])([a-z]{0,4}-?\d{4,12}(?:-[a-z0-9]{1,8})?)(?![\w/-])(?![.,]\d)"
)
YEAR = re.compile(r"(?:19|20)\d\d")


def _find_order_id_in_context(folded: str) -> Found | None:
    """In a message about an order: an id after "el número es", "it's"..., else an id of 4
    to 12 digits standing on its own ("mi pedido anterior 12345 no llegó"); never a number
    right after "código postal", "teléfono", "tarjeta"..., a date or a year."""
    cued = [(m.start(), m.span(1)) for m in ORDER_CONTEXT_CUE.finditer(folded)]
    bare = [
        (m.start(1), m.span(1))
        for m in ORDER_IN_CONTEXT.finditer(folded)
        if not YEAR.fullmatch(m.group(1))
    ]
    for start, (id_start, id_end) in [*cued, *bare]:
        if not NOT_AN_ORDER_NUMBER.search(folded[max(0, start - 30) : id_start]):
            return Found(folded[id_start:id_end].upper(), id_start, id_end)
    return None


def _find_order_id(folded: str, *, expected: bool = False) -> Found | None:
    for pattern in (ORDER_CUE, ORDER_HASH, *((ORDER_BARE,) if expected else ())):
        match = pattern.search(folded)
        if match:
            return Found(match.group(1).upper(), *match.span(1))
    return None


def extract_order_id(text: str, *, expected: bool = False) -> str | None:
    """ "pedido 12345" -> "12345", "order #A-1002" -> "A-1002"; a bare "12345" only when the
    agent has just asked for it (`expected`). Prices and two-digit numbers never count."""
    folded = fold_aligned(prepare(text))
    found = _find_order_id(blank(folded, _money_and_time(folded)), expected=expected)
    return found.value if found else None


# --- phone -----------------------------------------------------------------------------------

PHONE_RUN = re.compile(r"(?<![\w@/.,+-])(?:\(?(?:\+|00)\s?)?\(?\d[\d\s().\-]*\d\)?(?![\w@])")
PHONE_CUE = re.compile(
    r"\b(?:telefono|tel|tlf|tfno|movil|celular|cel|whatsapp|wasap|llamame|llamadme|phone|"
    r"mobile|cell|call me|text me)\b"
)
DIGIT_GROUP = re.compile(r"\d+")


def _phone_value(digits: str, international: bool, cued: bool) -> str | None:
    if international:
        if digits.startswith("34"):
            ok = len(digits) == 11 and digits[2] in "6789"
            return f"+{digits}" if ok else None
        return f"+{digits}" if 8 <= len(digits) <= 15 else None
    if len(digits) == 9 and digits[0] in "6789":
        return f"+34{digits}"
    if cued and 7 <= len(digits) <= 12:
        return digits
    return None


def _find_phone(folded: str) -> Found | None:
    for run in PHONE_RUN.finditer(folded):
        raw = run.group(0)
        international = bool(re.match(r"\(?(?:\+|00)", raw))
        groups = [
            (m.start() + run.start(), m.end() + run.start(), m.group(0))
            for m in DIGIT_GROUP.finditer(raw)
        ]
        if international and raw.lstrip("(").startswith("00"):
            first_start, first_end, first = groups[0]
            groups[0] = (first_start + 2, first_end, first[2:])
        cued = bool(PHONE_CUE.search(folded[max(0, run.start() - 30) : run.start()]))
        for i in range(len(groups)):
            best: Found | None = None
            for j in range(i, len(groups)):
                digits = "".join(g[2] for g in groups[i : j + 1])
                value = _phone_value(digits, international and i == 0, cued)
                if value:
                    start = run.start() if i == 0 else groups[i][0]
                    best = Found(value, start, groups[j][1])
            if best:
                return best
    return None


def extract_phone(text: str) -> str | None:
    """ "612 34 56 78", "+34 612-345-678", "0034612345678" -> "+34612345678";
    "+44 20 7946 0958" -> "+442079460958"; other national numbers only after "teléfono",
    "móvil", "phone"...; "189,99 €", "pedido 12345" and dates -> None."""
    folded = fold_aligned(prepare(text))
    masked = blank(folded, _money_and_time(folded))
    order = _find_order_id(masked)
    if order:
        masked = blank(masked, [(order.start, order.end)])
    found = _find_phone(masked)
    return found.value if found else None


# --- address ---------------------------------------------------------------------------------

STREET_FIRST = (
    r"calle|c/|cl\.|avenida|avda|avd|av\.|plaza|pza|pl\.|paseo|p[o°]\.|camino|carretera|ctra|"
    r"ronda|travesia|glorieta|via|urbanizacion|urb\.|pasaje|rambla|carrera|cra\.|diagonal|"
    r"transversal|bulevar|callejon|street|avenue|road|boulevard|lane|drive"
)
STREET_LAST = (
    r"street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|way|place|pl|court|ct|"
    r"square|sq|terrace|crescent|close|highway|hwy|parkway|pkwy"
)
ADDRESS_ES = re.compile(
    rf"(?<![\w/])(?:{STREET_FIRST})(?:(?<=[/.])|\b)\.?\s*[^\d\n;:!?¿¡@]{{0,60}}?\d+"
)
ADDRESS_EN = re.compile(
    rf"(?<![\w.,-])\d+[a-z]?\s+(?:(?!(?:of|the|a|an|for|my|in|to|and|with|from|on|at|by|"
    r"these|those|them|pairs?|units?|more|x)\b)[a-z0-9'.-]+\s+){1,4}?"
    rf"(?:{STREET_LAST})\b\.?"
)
ADDRESS_STOP = re.compile(
    r"\n|;|\?|!|\s{3,}|@"
    r"|,?\s*\b(?:y|and|e|,)?\s*(?:mi|my|el|the|tu|su)?\s*(?:email|e-mail|correo|mail|telefono|"
    r"tel|movil|phone|mobile|whatsapp|numero de telefono|phone number)\b"
    r"|\b(?:por favor|please|gracias|thanks|thank you)\b"
    r"|\.\s+(?=[a-z])"
)
ABBREVIATIONS = word_set("avda av avd c cl pza pl st rd ave n no dr ctra urb po esc pta bis")
LEFT_EXTENSION = re.compile(r"(?:(?<=\s)|^)((?:[A-ZÁÉÍÓÚÑ][\wáéíóúñ'-]*\s){1,3})$")
NOT_PART_OF_A_NAME = word_set(
    "mi my es is a en to at direccion address envialo mandalo ship send hola hi vivo i live"
)


def _find_address(text: str, folded: str) -> Found | None:
    candidates = [m for pattern in (ADDRESS_ES, ADDRESS_EN) for m in pattern.finditer(folded)]
    if not candidates:
        return None
    match = min(candidates, key=lambda m: m.start())
    start, end = match.span()
    line_end = len(folded)
    for stop in ADDRESS_STOP.finditer(folded, end):
        if stop.group(0).startswith("."):
            before = re.search(r"(\w+)$", folded[: stop.start()])
            if before and before.group(1) in ABBREVIATIONS:
                continue
        line_end = stop.start()
        break
    if line_end - start > 160:
        line_end = start + 160
    left = LEFT_EXTENSION.search(text[:start])
    if left:
        words = left.group(1).split()
        while words and fold_aligned(words[0]) in NOT_PART_OF_A_NAME:
            words.pop(0)
        if words:
            start -= len(" ".join(words)) + 1
    value = " ".join(text[start:line_end].split()).strip(" ,.-y")
    value = re.sub(r"\s+(?:y|and)$", "", value)
    return Found(value, start, line_end) if re.search(r"\d", value) else None


def extract_address(text: str) -> str | None:
    """An address line: a street word (calle, c/, avda., plaza, paseo, street, road...) and a
    number, kept as written with its floor, postcode and city, up to the end of the sentence or
    an e-mail/phone: "Mi dirección es Calle Mayor 5, 3º B, 28013 Madrid y mi correo..." ->
    "Calle Mayor 5, 3º B, 28013 Madrid"; "221B Baker Street, London NW1 6XE" as written."""
    prepared = prepare(text)
    folded = fold_aligned(prepared)
    email = _find_email(prepared)
    if email:
        folded = blank(folded, [(email.start, email.end)])
    found = _find_address(prepared, folded)
    return found.value if found else None


# --- size ------------------------------------------------------------------------------------

SIZE_WORD = r"(?:tallas?|talle|size|sz|numero|num|calzo|calza|calzas|uso|usas)"
SIZE_FILL = r"(?:\s*(?:(?:de|del|la|el|un|una|es|is|en|in|a|the|mi|my|por favor)\b|[:=]))*"
HALF = r"(\s+(?i:y\s+medi[oa]|and\s+a\s+half|1/2)(?![\w/])|\s\.5(?!\d))?"
"""A half said in words or as a fraction after the number ("42 y medio", "42 1/2", "9 and a
half"; "42 ½" is "42 .5" once prepared), its own group."""
SIZE_NUMBER = rf"(\d{{1,2}}(?:[.,]5)?)(?!\d|[.,]\d){HALF}"
SIZE_SYSTEM = r"(?:\s?(eu|eur|us|usa|uk|mx|cm)\b)?"
LETTER_SIZES = r"(xxs|xs|s|m|l|xl|xxl|xxxl|2xl|3xl|4xl)"
SIZE_EXPLICIT_NUMBER = re.compile(rf"\b{SIZE_WORD}\b{SIZE_FILL}\s*{SIZE_NUMBER}{SIZE_SYSTEM}")
SIZE_EXPLICIT_LETTER = re.compile(rf"\b{SIZE_WORD}\b{SIZE_FILL}\s*{LETTER_SIZES}\b")
SIZE_WITH_SYSTEM = re.compile(rf"(?<![\d.,])(\d{{1,2}}(?:[.,]5)?){HALF}\s?(eu|eur|uk|mx|cm)\b")
SIZE_US_SUFFIX = re.compile(rf"(?<![\d.,])(\d{{1,2}}(?:[.,]5)?){HALF}\s?(US|us(?=\W*$))\b")
SIZE_SYSTEM_FIRST = re.compile(rf"\b(US|UK|EU)\s?{SIZE_NUMBER}")
SIZE_BARE_NUMBER = re.compile(rf"(?<![\w.,#-])(\d{{1,2}}(?:[.,]5)?)(?![\w-]|[.,]\d){HALF}")
SIZE_BARE_LETTER = re.compile(r"(?<!\w)(XXS|XS|S|M|L|XL|XXL|XXXL|2XL|3XL|4XL)(?!\w)")
SIZE_SYSTEMS = {"eu": "", "eur": "", "us": "US", "usa": "US", "uk": "UK", "mx": "MX", "cm": "cm"}
FILLER_WORDS = word_set(
    "si yes ok vale pues la el una un en in talla size the a porfa please por favor mejor "
    "better then entonces"
)


def _size_value(number: str, system: str | None = "", half: str | None = None) -> str | None:
    value = float(number.replace(",", "."))
    if half and value.is_integer():
        value += 0.5
    if not 1 <= value <= 60:
        return None
    text = f"{value:g}"
    system = system or ""
    suffix = SIZE_SYSTEMS.get(system.lower(), system.upper())
    return f"{text} {suffix}" if suffix else text


def _letter(value: str) -> str:
    upper = value.upper()
    return {"2XL": "XXL", "3XL": "XXXL", "4XL": "XXXXL"}.get(upper, upper)


def _find_size(original: str, folded: str, *, expected: bool = False) -> Found | None:
    """`original` is the prepared message and `folded` its folded copy, blanked alike."""
    letter = SIZE_EXPLICIT_LETTER.search(folded)
    if letter:
        return Found(_letter(letter.group(1)), letter.start(), letter.end())
    explicit = SIZE_EXPLICIT_NUMBER.search(folded)
    if explicit:
        value = _size_value(explicit.group(1), explicit.group(3), explicit.group(2))
        if value:
            return Found(value, explicit.start(), explicit.end())
    for pattern, source in ((SIZE_WITH_SYSTEM, folded), (SIZE_US_SUFFIX, original)):
        match = pattern.search(source)
        if match:
            value = _size_value(match.group(1), match.group(3), match.group(2))
            if value:
                return Found(value, match.start(), match.end())
    first = SIZE_SYSTEM_FIRST.search(original)
    if first:
        value = _size_value(first.group(2), first.group(1), first.group(3))
        if value:
            return Found(value, first.start(), first.end())
    if not expected:
        return None
    for match in SIZE_BARE_NUMBER.finditer(folded):
        number = float(match.group(1).replace(",", "."))
        if 35 <= number <= 50 or 1 <= number <= 16:
            value = _size_value(match.group(1), "", match.group(2))
            if value:
                return Found(value, match.start(1), match.end())
    letter_bare = SIZE_BARE_LETTER.search(original)
    if letter_bare:
        return Found(_letter(letter_bare.group(1)), *letter_bare.span(1))
    words = [w for w in re.findall(r"[a-z0-9]+", folded) if w not in FILLER_WORDS]
    if len(words) == 1 and re.fullmatch(LETTER_SIZES, words[0]):
        at = folded.rfind(words[0])
        return Found(_letter(words[0]), at, at + len(words[0]))
    return None


def _mirror(prepared: str, work: str) -> str:
    """`prepared` with the characters blanked in its folded copy `work` blanked too."""
    return "".join(" " if w == " " else c for c, w in zip(prepared, work, strict=True))


def extract_size(text: str, *, expected: bool = False) -> str | None:
    """ "talla 42" -> "42", "talla 42,5" / "42½" / "size 42.5" / "calzo un 42 y medio" /
    "talla 42 1/2" -> "42.5", "size 9 and a half" -> "9.5", "size 10 US" ->
    "10 US", "UK 8" -> "8 UK", "talla M" / "size xl" -> "M" / "XL". A bare "43" or "M" only
    when the agent has just asked for the size (`expected`). Prices never count."""
    prepared = prepare(text)
    folded = fold_aligned(prepared)
    masked = blank(folded, _money_and_time(folded))
    found = _find_size(_mirror(prepared, masked), masked, expected=expected)
    return found.value if found else None


# --- quantity --------------------------------------------------------------------------------

QUANTITY_CUE = (
    r"quiero|quisiera|queria|querria|necesito|dame|deme|ponme|pon|pongame|mandame|enviame|"
    r"manda|envia|compro|comprar|comprare|compraria|llevo|llevare|pido|pedir|reservame|"
    r"reservar|cantidad|want|need|buy|order|take|give me|send me|add|make it|quantity|qty"
)
QUANTITY_FILL = r"(?:(?:solo|solamente|unicamente|just|only|unas|unos|otras|otros|another)\s+)?"
UNITS = (
    r"unidades|unidad|uds|ud|u|pares|par|piezas|pieza|zapatillas|zapatilla|zapatos|zapato|"
    r"deportivas|botas|camisetas|camiseta|sudaderas|mochilas|mochila|items?|units?|pairs?|"
    r"pieces?|sneakers?|shoes?|trainers?|shirts?|t-shirts?|tshirts?|backpacks?|de ellas|"
    r"de ellos|de esas|de esos|of them|of those|mas|more|iguales"
)
FOOTWEAR = r"zapatillas|zapatos|deportivas|botas|tenis|sandalias|chanclas|sneakers|shoes|trainers"
QUANTITY_PHRASES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(rf"\bun par de (?:{FOOTWEAR})\b"), 1),
    (re.compile(rf"\ba pair of (?:{FOOTWEAR})\b"), 1),
    (re.compile(r"\b(?:una docena|a dozen)\b"), 12),
    (re.compile(r"\b(?:un par|a couple)\b"), 2),
    (re.compile(r"\ba pair\b"), 1),
)
X_FORM = re.compile(r"(?:(?<=\s)|^)[x\u00d7]\s?(\d{1,4})\b|\b(\d{1,4})\s?[x\u00d7](?=\s|$|[.,;!?])")
SMALL_ARTICLES = frozenset({"un", "una", "uno", "one"})


def _quantity_number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.get(token)


def _product_numbers(folded: str, product_names: Iterable[str]) -> list[tuple[int, int]]:
    """Numbers that belong to a product's name ("Kobe 6", "Pegasus 41"), never a quantity."""
    spans = []
    for name in product_names:
        tokens = re.findall(r"[a-z0-9]+", fold_aligned(name))
        for word, number in itertools.pairwise(tokens):
            if number.isdigit() and not word.isdigit():
                pattern = rf"\b{re.escape(word)}\w?\s+({re.escape(number)})\b"
                spans += [m.span(1) for m in re.finditer(pattern, folded)]
    return spans


def _find_quantity(
    folded: str,
    *,
    product_words: Collection[str] = (),
    expected: bool = False,
    sizes_expected: bool = False,
) -> Found | None:
    units = UNITS + "".join(f"|{re.escape(w)}" for w in product_words)
    number = rf"(\d{{1,6}}|{WORD_NUMBER})"
    after_cue = re.compile(rf"\b(?:{QUANTITY_CUE})\s+{QUANTITY_FILL}{number}\b(?!\s?[.,]\d)")
    before_unit = re.compile(rf"\b{number}\s+(?:(?:de|of)\s+)?(?:{units})\b")
    candidates: list[tuple[Found, bool]] = []
    for pattern, value in QUANTITY_PHRASES:
        for match in pattern.finditer(folded):
            candidates.append((Found(value, *match.span()), True))
    for match in X_FORM.finditer(folded):
        candidates.append((Found(int(match.group(1) or match.group(2)), *match.span()), True))
    for match in before_unit.finditer(folded):
        candidates.append((Found(_quantity_number(match.group(1)), *match.span()), True))
    for match in after_cue.finditer(folded):
        token = match.group(1)
        rest = folded[match.end() :].lstrip()
        if token in SMALL_ARTICLES and rest and rest[0].isalnum():
            continue
        candidates.append((Found(_quantity_number(token), *match.span(1)), False))
    if expected:
        for match in re.finditer(rf"(?<![\w.,#-]){number}(?![\w-]|[.,]\d)", folded):
            candidates.append((Found(_quantity_number(match.group(1)), *match.span(1)), False))
    ordered = sorted(candidates, key=lambda c: (c[0].start, not c[1]))
    claimed: list[tuple[int, int]] = []
    for found, with_unit in ordered:
        if any(found.start < end and start < found.end for start, end in claimed):
            continue
        claimed.append((found.start, found.end))
        value = found.value
        if not isinstance(value, int):
            continue
        if sizes_expected and not with_unit and 35 <= value <= 50:
            continue
        return found
    return None


def extract_quantity(
    text: str, *, expected: bool = False, product_names: Sequence[str] = ()
) -> int | None:
    """How many: "quiero 2", "dos pares", "x2", "un par" (2), "un par de zapatillas" (1 pair),
    "a couple" (2), "three units" -> 2, 2, 2, 2, 1, 2, 3; "quiero 100 pares" -> 100 and "0
    pares" -> 0 as given (validation refuses them; a quantity is never dropped to default to 1).
    A number counts only with a cue before it
    ("quiero", "dame", "want") or a unit after it ("pares", "unidades", a product's name), or
    bare when the agent asked how many (`expected`). Prices ("189,99 €"), sizes ("talla 42"),
    order ids, phones, durations ("dos semanas") and model numbers ("Kobe 6") never count."""
    prepared = prepare(text)
    folded = fold_aligned(prepared)
    spans = _money_and_time(folded) + _product_numbers(folded, product_names)
    masked = blank(folded, spans)
    for finder in (_find_email, _find_order_id, _find_phone):
        found = finder(masked)
        if found:
            masked = blank(masked, [(found.start, found.end)])
    size = _find_size(_mirror(prepared, masked), masked)
    if size:
        masked = blank(masked, [(size.start, size.end)])
    quantity = _find_quantity(masked, product_words=_name_words(product_names), expected=expected)
    return quantity.value if quantity else None


# --- product ---------------------------------------------------------------------------------

GENERIC_WORDS = word_set(
    """zapatilla zapatillas zapato zapatos deportiva deportivas bota botas camiseta camisetas
    mochila mochilas producto productos modelo modelos articulo sneaker sneakers shoe shoes
    trainer trainers shirt shirts backpack product model item the las los del para con"""
)


def _name_words(names: Iterable[str]) -> set[str]:
    return {
        word
        for name in names
        for word in re.findall(r"[a-z]+", fold_aligned(name))
        if len(word) >= 3 and word not in GENERIC_WORDS
    }


def _word_hits(name_word: str, words: Collection[str]) -> bool:
    if name_word in words:
        return True
    return len(name_word) >= 4 and any(
        len(word) >= 4 and within_one_edit(name_word, word) for word in words
    )


def match_product(text: str, candidates: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The catalogue entry the customer names, forgiving accents, case, plurals and one typo
    ("kobee"); None when no entry is named. Words in every candidate's name ("zapatilla" when
    all are sneakers) name nothing; a generic word ("camiseta") names one when it tells the
    candidates apart."""
    words = set(re.findall(r"[a-z0-9]+", fold_aligned(prepare(text))))
    names = [set(re.findall(r"[a-z]+", fold_aligned(str(c.get("name", ""))))) for c in candidates]
    best: tuple[float, int] | None = None
    for index, name in enumerate(names):
        score = 0.0
        for word in name:
            if len(word) < 3:
                continue
            shared_by = sum(word in other for other in names)
            if word in GENERIC_WORDS and shared_by == len(names):
                continue
            if _word_hits(word, words):
                score += 1.0 / shared_by
        if score > 0 and (best is None or score > best[0]):
            best = (score, index)
    return candidates[best[1]] if best else None


NAME_FILLERS = word_set("de del la el las los the of a an en in y and con with")


def _name_tokens(text: str) -> frozenset[str]:
    """The words of a product name that tell it apart: no generic words ("zapatilla") or
    fillers ("de", "the"); model numbers kept ("Pegasus 41" is not "Pegasus 40")."""
    tokens = re.findall(r"[a-z0-9]+", fold_aligned(prepare(text)))
    return frozenset(t for t in tokens if t not in GENERIC_WORDS and t not in NAME_FILLERS)


def is_catalogue_entry(value: Any) -> bool:
    """Whether `value` looks like a catalogue entry's fields: an id and a price or a stock."""
    return (
        isinstance(value, Mapping)
        and bool(value.get("id"))
        and ("price" in value or "stock" in value)
    )


def resolve_product(
    reference: Any, candidates: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The catalogue entry a remembered product stands for. A catalogue entry (what this
    responder remembers) is itself. A name or an id (what a language model's turn remembers,
    e.g. "Zapatilla Kobe 6 Protro"), or a dict without catalogue fields, is looked up among
    `candidates` (the retrieved catalogue entries): its id, or the one name whose distinctive
    words contain its words or are contained in them ("Kobe 6 Protro" -> "Zapatilla Kobe 6
    Protro 'Grinch'"). None when nothing matches or more than one does ("Kobe 6" with two Kobe
    6 models): the caller asks which product instead of guessing."""
    if is_catalogue_entry(reference):
        return reference  # type: ignore[no-any-return]
    if isinstance(reference, Mapping):
        reference = reference.get("id") or reference.get("name")
    if not isinstance(reference, str) or not reference.strip():
        return None
    text = reference.strip()
    by_id = [c for c in candidates if str(c.get("id", "")).lower() == text.lower()]
    if len(by_id) == 1:
        return by_id[0]
    wanted = _name_tokens(text)
    if not wanted:
        return None
    names = [(_name_tokens(str(c.get("name", ""))), c) for c in candidates]
    same = [c for name, c in names if name == wanted]
    if len(same) == 1:
        return same[0]
    overlapping = [c for name, c in names if name and (wanted <= name or name <= wanted)]
    return overlapping[0] if len(overlapping) == 1 else None


# --- all at once -----------------------------------------------------------------------------


def extract_all(
    text: str,
    *,
    expected: Collection[str] = (),
    products: Sequence[Mapping[str, Any]] = (),
    order_context: bool = False,
) -> dict[str, Any]:
    """Every slot this message gives, by name (see the module docstring for the values).
    `expected` names the slots the agent has just asked for, whose bare values count;
    `products` are the catalogue entries in play (retrieved and remembered). In a message
    about an order ("pedido", "order", "paquete"...), or with `order_context` (the intent is
    about one), an id of 4 to 12 digits after "el número es", "it's"... is the order id."""
    prepared = prepare(text)
    folded = fold_aligned(prepared)
    names = [str(p.get("name", "")) for p in products]
    found: dict[str, Any] = {}
    email = _find_email(prepared)
    masks: list[tuple[int, int]] = [(email.start, email.end)] if email else []
    if email:
        found["email"] = email.value
    masks += _money_and_time(folded) + _product_numbers(folded, names)
    work = blank(folded, masks)

    def take(slot: str, hit: Found | None) -> None:
        nonlocal work
        if hit is not None:
            found[slot] = hit.value
            work = blank(work, [(hit.start, hit.end)])

    take("order_id", _find_order_id(work))
    take("address", _find_address(prepared, work))
    bare_order = "order_id" in expected and "order_id" not in found
    if bare_order and not (PHONE_CUE.search(work) or "+" in work):
        take("order_id", _find_order_id(work, expected=True))
    take("phone", _find_phone(work))
    if bare_order and "order_id" not in found:
        take("order_id", _find_order_id(work, expected=True))
    if "order_id" not in found and (order_context or ORDER_TOPIC.search(work)):
        take("order_id", _find_order_id_in_context(work))
    take("size", _find_size(_mirror(prepared, work), work))
    take(
        "quantity",
        _find_quantity(
            work,
            product_words=_name_words(names),
            expected="quantity" in expected,
            sizes_expected="size" in expected,
        ),
    )
    if "size" in expected and "size" not in found:
        take("size", _find_size(_mirror(prepared, work), work, expected=True))
    product = match_product(text, products) if products else None
    if product is not None:
        found["product"] = dict(product)
    return found


# --- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """Why an intent cannot go ahead yet: a required slot is missing, or its value is invalid."""

    slot: str
    kind: str  # "missing" or "invalid"
    value: Any = None


def product_sizes(product: Mapping[str, Any]) -> list[Any]:
    sizes = product.get("sizes")
    return list(sizes) if isinstance(sizes, list | tuple) else []


EU_MINUS_US_UK = (31.0, 34.0)
"""An adult EU shoe size is its US or UK size plus 31 to 34 (EU 43: US 10, UK 9)."""


def _converts(value: float, numeric: Sequence[float]) -> bool:
    """Whether a US/UK size `value` can be one of the EU sizes `numeric` (38-46: 4 to 15)."""
    low, high = EU_MINUS_US_UK
    return min(numeric) - high <= value <= max(numeric) - low


def size_fits(size: str, sizes: Sequence[Any]) -> bool:
    """Whether `size` is one the product comes in. Letters must be listed; an EU number
    (halves included: "42.5") must be listed; a US or UK size ("10 US", "8 UK") or a bare
    number under 20 next to EU sizes is taken as given (the shop converts it) when some listed
    size can be it ("10" for 38-46, never "2"); other systems ("27 cm") as given."""
    if not sizes:
        return True
    numeric = [float(s) for s in sizes if isinstance(s, int | float) or _is_number(str(s))]
    letters = {str(s).upper() for s in sizes if not _is_number(str(s))}
    parts = size.split()
    if len(parts) == 2:
        if not numeric or not _is_number(parts[0]):
            return False
        if parts[1].upper() in ("US", "UK") and min(numeric) >= 20:
            return _converts(float(parts[0]), numeric)
        return True
    if _is_number(size):
        value = float(size)
        if value in numeric:
            return True
        return bool(numeric) and value < 20 <= min(numeric) and _converts(value, numeric)
    return size.upper() in letters


def _is_number(text: str) -> bool:
    return re.fullmatch(r"\d+(?:\.\d+)?", text) is not None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    return None


def slot_issues(required: Iterable[str], known: Mapping[str, Any]) -> list[Issue]:
    """The problems in `known` for an intent needing `required`, in the order to ask them.

    The product is checked first (missing, or out of stock). "size" is needed only when the
    product lists sizes, and must fit them. "quantity" defaults to 1 and may not exceed the
    stock. Any other slot is missing until it is known."""
    required = list(dict.fromkeys(required))
    product = known.get("product")
    product = product if isinstance(product, Mapping) and product else None
    issues: list[Issue] = []
    if "product" in required or "size" in required or "quantity" in required:
        if product is None:
            if "product" in required:
                issues.append(Issue("product", "missing"))
        else:
            stock = _as_int(product.get("stock"))
            if "stock" in product and stock is not None and stock <= 0:
                issues.append(Issue("product", "invalid", product.get("name")))
    for slot in required:
        if slot == "product":
            continue
        value = known.get(slot)
        if slot == "size":
            sizes = product_sizes(product) if product else []
            if not sizes:
                continue
            if value in (None, ""):
                issues.append(Issue("size", "missing"))
            elif not size_fits(str(value), sizes):
                issues.append(Issue("size", "invalid", value))
        elif slot == "quantity":
            quantity = _as_int(value if value is not None else 1)
            stock = _as_int(product.get("stock")) if product else None
            too_many = quantity is not None and stock is not None and 0 < stock < quantity
            if quantity is None or not 1 <= quantity <= MAX_QUANTITY or too_many:
                issues.append(Issue("quantity", "invalid", value))
        elif value in (None, ""):
            issues.append(Issue(slot, "missing"))
    return issues


def format_sizes(sizes: Sequence[Any]) -> str:
    """38, 39 ... 46 -> "38-46"; ["S", "M", "L"] -> "S, M, L"."""
    shown = [f"{float(s):g}" if isinstance(s, int | float) else str(s) for s in sizes]
    numbers = [float(s) for s in sizes if isinstance(s, int | float)]
    if len(numbers) == len(sizes) >= 4 and all(n.is_integer() for n in numbers):
        ints = sorted(int(n) for n in numbers)
        if ints == list(range(ints[0], ints[-1] + 1)):
            return f"{ints[0]}-{ints[-1]}"
    return ", ".join(shown)
