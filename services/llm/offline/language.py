"""Which language a message is in, and what kind of message it is (a yes, a no, a request for a
person). Small word-list heuristics: pure, deterministic and tested on awkward inputs."""

import re

from services.llm.offline.text import fold_aligned, word_set

SPANISH = word_set(
    """el la los las del de que y en un una unos unas mi mis por para con es esta estoy
    quiero quisiera hola buenas buenos gracias pedido talla tallas tienen tengo hay pero muy ya
    dónde donde cuánto cuanto cuesta ha han he llegado dejé deje carrito zapatillas zapatilla
    calle correo envío envio favor vale pues también tambien ahora cuando porque sí nada
    hablar persona mañana semanas días dias mío mio llegó llego todavía todavia aún comprar
    comprarla comprarlo dirección direccion teléfono telefono número numero se su sus al lo le
    les nos os este ese eso esto algo bien puedo puedes podéis"""
)
ENGLISH = word_set(
    """the an i my to of and is it in you your yes yeah hi hello hey thanks thank please want
    would like order size have has hasn't haven't never arrived where what how can could with
    for do does did left cart sneakers shoes buy talk speak human person street address phone
    number email still when will just that this there they we our be was were been not don't
    didn't it's i'm i'd i'll get got send need am are sure go ahead received
    package"""
)
SPANISH_MARKS = re.compile(r"[áéíóúñ¿¡]", re.IGNORECASE)
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def detect_language(text: str) -> str:
    """ "es", "en", or "" when the message gives no clue ("43", "ok", an e-mail address).

    Votes: each Spanish or English marker word is one vote, each Spanish-only character
    (accents, ñ, ¿ and ¡) half a vote; words both languages share ("no", "me", "a") vote for
    neither. A tie is no answer.
    """
    words = [w.lower() for w in WORD.findall(text.replace("\u2019", "'"))]
    spanish = sum(w in SPANISH for w in words) + 0.5 * len(SPANISH_MARKS.findall(text))
    english = sum(w in ENGLISH for w in words)
    if spanish > english:
        return "es"
    if english > spanish:
        return "en"
    return ""


def primary(language: str) -> str:
    """The primary subtag of a BCP-47 tag: "es-CO" -> "es"."""
    return language.strip().lower().replace("_", "-").split("-")[0]


NEGATION = re.compile(
    r"\b(?:no|nop|nope|nah|not|never|don'?t|do not|todavia no|aun no|mejor no|ni hablar|"
    r"cancel\w*|anula\w*|espera|wait|hold on)\b"
)
YES_ANYWHERE = re.compile(
    r"\b(?:claro|vale|ok|okay|okey|oki|dale|venga|perfecto|genial|de acuerdo|adelante|"
    r"confirm\w*|correcto|exacto|por supuesto|hecho|listo|yes|yeah|yep|yup|sure|go ahead|"
    r"sounds good|let'?s do it|please do|of course|absolutely|alright|deal)\b"
)
# "si" without its accent is also "if": "si tienen la 43..." asks, "si, la 43" agrees.
CONDITIONAL = re.compile(
    r"^\W*si\s+(?:tienen|tienes|tiene|teneis|hay|queda|quedan|puedo|puedes|puede|pueden|es|son|"
    r"esta|estan|fuera|llega|llegan|quisiera|me\s+(?:pued|pod|dic|dec)|lo\s+tien|la\s+tien|"
    r"las\s+tien|los\s+tien|no)\b"
)
SI_FIRST = re.compile(r"^\W*si\b")
SI_ACCENTED = re.compile(r"(?<!\w)sí(?!\w)", re.IGNORECASE)
COMMITMENT = re.compile(
    r"\b(?:compr(?:o|ar|arla|arlo|arlas|arlos|are|amos)|me (?:la|lo|las|los) (?:llevo|quedo)|"
    r"(?:la|lo|las|los) quiero|quiero (?:la|el|las|los|esa|ese|esas|esos) (?:talla|numero|\d)|"
    r"pidel[ao]s?|pidemel[ao]s?|reserv(?:a|ar|amela|amelo|ala|alo|alas|alos)|"
    r"(?:i'?ll|i will|let me) (?:take|get|buy) (?:it|them|one|a pair)|"
    r"(?:buy|order|purchase|take|want) (?:it|them)|place the order|i want (?:size|the|it))\b"
)


def is_confirmation(text: str) -> bool:
    """True for an explicit yes to the proposal on the table: "sí, la talla 43", "si", "vale",
    "quiero comprarla en talla 43", "yes, size 10", "I'll take them". Anything with a negation
    ("todavía no", "no, gracias", "not yet", "cancel") or opening with a condition ("si tienen
    la 43, me la llevo") is not a confirmation: the customer gets the summary to confirm."""
    low = fold_aligned(text).lower()
    if NEGATION.search(low) or CONDITIONAL.search(low):
        return False
    return bool(
        SI_ACCENTED.search(text)
        or SI_FIRST.search(low)
        or YES_ANYWHERE.search(low)
        or COMMITMENT.search(low)
    )


REFUSAL_WORDS = word_set(
    """no nop nope nah not never nunca todavia aun ahora now yet today hoy momento de por el la
    lo los las eso it that this them mejor better gracias thanks thank you cancel cancela
    cancelar cancelalo cancelala anula anular anulalo anulala dejalo dejala dejemoslo olvidalo
    olvidala forget mind nevermind ni hablar espera wait hold on si yes claro ok vale pues bueno
    well pero but quizas maybe luego later otro dia day time rato ocasion vez pedido order compra
    purchase quiero want i don't dont do me interesa interested prefiero esperar please porfa
    favor siento sorry sure hagas hagan place make"""
)
"""The words a reply that is only a no may use ("no, gracias", "mejor no", "no, déjalo", "sí
claro, pero no ahora", "not now, thanks"): no product, size, order number or question."""


def is_refusal(text: str) -> bool:
    """True for a reply that is primarily a no to the proposal on the table: "no", "no
    gracias", "mejor no", "no, déjalo", "todavía no", "not yet", "cancel". A sentence that only
    contains a "no" ("mi pedido anterior 12345 no llegó", "no, mejor talla 44") is not one."""
    low = fold_aligned(text).lower().replace("\u2019", "'")
    if not NEGATION.search(low) or "?" in low:
        return False
    words = re.findall(r"[a-z0-9']+", low)
    return all(word in REFUSAL_WORDS or word.strip("'") in REFUSAL_WORDS for word in words)


DOES_NOT_HAVE = re.compile(
    r"\b(?:no (?:lo |la |los |las )?(?:tengo|encuentro|veo|se|sabria|recuerdo|guarde)|"
    r"no me (?:acuerdo|lo se|la se)|ni idea|no tengo ni idea|lo (?:he )?perdido|lo borre|"
    r"(?:don'?t|do not|can'?t|cannot|couldn'?t) (?:have|find|remember|recall|know|see)|"
    r"no idea|(?:lost|deleted) (?:it|the email|the mail)|not sure what it is)\b"
)


def does_not_have(text: str) -> bool:
    """True when the customer says they cannot give what was asked: "no lo tengo a mano", "no
    sé cuál es", "no me acuerdo", "I don't have it", "I can't find it"."""
    return bool(DOES_NOT_HAVE.search(fold_aligned(text).lower().replace("\u2019", "'")))


HUMAN_ES = re.compile(
    r"\b(?:habla|hablar|hable|hablen|hablo|hablemos|comunica\w*|pasa|pasame|paseme|pasarme|"
    r"pasas|pasais|pasen|pases|pasar|atiend\w*|atender|contactar|llamar|llame|llamen|llamame|"
    r"ponme|pongame|ponerme|poner)\b"
    r"[^.?!]{0,30}?\b(?:persona|humano|humana|agente|asesor|asesora|operador|operadora|"
    r"alguien|encargad[oa]|responsable|representante|emplead[oa]|gente de verdad)\b"
)
HUMAN_EN = re.compile(
    r"\b(?:talk|speak|chat|connect|transfer|put|get)\b[^.?!]{0,30}?\b(?:human|person|agent|"
    r"representative|rep|operator|someone|somebody|real people|staff|manager)\b"
)
HUMAN_ANY = re.compile(r"\b(?:persona real|humano real|real person|real human|human agent)\b")
NOT_WANTED = re.compile(r"\b(?:no (?:quiero|necesito)|don'?t (?:want|need)|do not (?:want|need))\b")


def wants_human(text: str) -> bool:
    """True for an explicit request for a person: "quiero hablar con una persona", "pásame con
    un agente", "I want to talk to a human", "can I speak to someone?"."""
    low = fold_aligned(text).lower()
    if NOT_WANTED.search(low):
        return False
    return bool(HUMAN_ES.search(low) or HUMAN_EN.search(low) or HUMAN_ANY.search(low))
