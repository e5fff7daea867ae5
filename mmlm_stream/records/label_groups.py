"""Model labels as plain English concepts: synonym families, plain names, articles.

Classifiers split one thing into many labels: EfficientNet gives a cat photo "Egyptian cat",
"tiger cat" and "tabby" at 0.2-0.45 each, and a dog photo a spread over 118 breeds. A describer
that mentions labels one by one writes label soup. Here each label maps to a ``Concept`` (a noun
phrase and whether it is countable), members of one family add up their scores, and sound tags
map to a ``Sound`` with a ready clause ("a beeping alarm sounds").

Everything is data: ImageNet first synonyms, AudioSet display names (matched on every
comma-separated part), the hub sets' zero-shot vocabularies and COCO detector names. A label
that no table knows passes through as a cleaned-up noun ("astronaut"), so open vocabularies work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from mmlm_stream.records.results import Label

Count = Literal["one", "many", "mass"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Concept:
    """A noun phrase and how English counts it ("a cat", "sunglasses", "broccoli")."""

    noun: str
    count: Count = "one"

    @property
    def plural(self) -> bool:
        return self.count == "many"

    def indefinite(self) -> str:
        return with_article(self.noun) if self.count == "one" else self.noun

    def definite(self) -> str:
        return f"the {self.noun}"


@dataclass(frozen=True, slots=True)
class Sound:
    """A sound family with the clause that says it and the one that says it goes on.

    ``key`` is also the key of its sound events; ``min_score`` is the score from which a
    description or an event names it, and ``min_seconds`` how long it must sound in the
    patches that show it (both calibrated on the packaged real sounds, tests/test_sounds.py).
    """

    key: str
    clause: str
    still: str
    urgent: bool = False
    min_score: float = 0.3
    min_seconds: float = 0.0


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names of a text block, lower-cased."""
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


# --- visual -----------------------------------------------------------------------------------

DOG = Concept("dog")
_VISUAL_FAMILIES: dict[Concept, tuple[str, ...]] = {
    Concept("cat"): _names(
        """cat, tabby, tabby cat, tiger cat, Persian cat, Siamese cat, Egyptian cat, kitten,
        domestic cat, house cat"""
    ),
    DOG: _names(
        """dog, puppy, Chihuahua, Pekinese, Shih-Tzu, papillon, Rhodesian ridgeback, basset,
        beagle, bloodhound, bluetick, redbone, borzoi, whippet, Saluki, Weimaraner,
        Staffordshire bullterrier, Airedale, cairn, Dandie Dinmont, Boston bull, Lhasa, vizsla,
        clumber, English springer, kuvasz, schipperke, groenendael, malinois, briard, kelpie,
        komondor, Bouvier des Flandres, Rottweiler, German shepherd, Doberman, Appenzeller,
        EntleBucher, boxer, Saint Bernard, malamute, dalmatian, basenji, pug, Leonberg,
        Newfoundland, Great Pyrenees, Samoyed, Pomeranian, chow, keeshond, Brabancon griffon,
        Pembroke, Cardigan Welsh Corgi, Mexican hairless, Great Dane"""
    ),
    Concept("cup of coffee"): _names("espresso, cup, coffee mug, coffee cup, mug, coffee"),
    Concept("rocket"): _names("rocket, projectile, missile, space shuttle"),
    Concept("car"): _names(
        """car, sports car, convertible, cab, taxi, beach wagon, jeep, limousine, minivan, racer,
        race car, Model T"""
    ),
    Concept("truck"): _names(
        "truck, pickup, pickup truck, trailer truck, tow truck, garbage truck, moving van"
    ),
    Concept("boat"): _names(
        "boat, speedboat, canoe, lifeboat, yawl, catamaran, trimaran, schooner, fireboat, gondola"
    ),
    Concept("ship"): _names("ship, liner, container ship, aircraft carrier, pirate"),
    Concept("airplane"): _names("airplane, airliner, warplane, aeroplane"),
    Concept("train"): _names(
        """train, steam locomotive, electric locomotive, bullet train, passenger car, freight car,
        streetcar"""
    ),
    Concept("phone"): _names(
        "phone, cellular telephone, dial telephone, cell phone, mobile phone, telephone"
    ),
    Concept("computer"): _names("computer, laptop, notebook, desktop computer"),
    Concept("screen"): _names("screen, monitor, television, tv, home theater"),
    Concept("bicycle"): _names("bicycle, bike, mountain bike, bicycle-built-for-two"),
    Concept("sunglasses", "many"): _names("sunglasses, sunglass, dark glasses"),
    Concept("mushroom"): _names(
        "mushroom, agaric, bolete, gyromitra, stinkhorn, earthstar, hen-of-the-woods, coral fungus"
    ),
}

# Breed names the table does not list end in one of these ("Yorkshire terrier", "toy poodle").
_DOG_SUFFIXES = (
    " terrier", " retriever", " spaniel", "hound", " setter", " pointer", " schnauzer",
    " poodle", " sheepdog", "collie", " mastiff", " bulldog", "pinscher", " husky", " dog",
)  # fmt: skip
_NOT_DOGS = frozenset(_names("hot dog, hotdog, prairie dog, sea dog, corn dog"))

# ImageNet first synonyms that read wrongly or coyly on their own, and detector shorthands.
_RENAMES: dict[str, Concept] = {
    "cock": Concept("rooster"),
    "drake": Concept("duck"),
    "tusker": Concept("elephant"),
    "jean": Concept("jeans", "many"),
    "pajama": Concept("pajamas", "many"),
    "swimming trunks": Concept("swim trunks", "many"),
    "mashed potato": Concept("mashed potatoes", "many"),
    "nipple": Concept("pacifier"),
    "maillot": Concept("swimsuit"),
    "one-piece bathing suit": Concept("swimsuit"),
    "loafer": Concept("shoe"),
    "ballplayer": Concept("baseball player"),
    "web site": Concept("website"),
    "hotdog": Concept("hot dog"),
    "toilet tissue": Concept("toilet paper", "mass"),
    "seashore": Concept("beach"),
    "lakeside": Concept("lakeshore"),
    "alp": Concept("mountain"),
    "wreck": Concept("shipwreck"),
    "pop bottle": Concept("soda bottle"),
    "french loaf": Concept("baguette"),
    "head cabbage": Concept("cabbage"),
    "studio couch": Concept("couch"),
    "dining table": Concept("table"),
    "potted plant": Concept("plant"),
    "sports ball": Concept("ball"),
    "hair drier": Concept("hair dryer"),
}

_MASS_NOUNS = frozenset(
    _names(
        """hay, wool, velvet, dough, broccoli, guacamole, carbonara, consomme, trifle, corn,
        rapeseed, red wine, chocolate sauce, ice cream, eggnog, cauliflower, water, grass, snow,
        fire, smoke, traffic, food, text, furniture, luggage, money, rain, fog, foliage, graffiti,
        sand, lightning, clothing, cutlery, silverware, steam, wood, percussion, music"""
    )
)
_PLURAL_NOUNS = frozenset(
    _names(
        """people, children, men, women, police, cattle, sheep, deer, fish, scissors, glasses,
        clothes, binoculars, parallel bars, pants, shorts"""
    )
)
# -ing words that are things or events, not activities ("a wedding", not "cooking").
_COUNTABLE_ING = frozenset(
    _names(
        """wedding, meeting, building, painting, ceiling, evening, morning, string, spring,
        gathering, opening, ending, greeting, recording, hearing, drawing, pudding, dumpling,
        sibling, seedling, earring, offspring"""
    )
)
_NOT_PLURAL_ENDINGS = ("ss", "us", "is", "as", "ics", "news", "ops", "lens", "series", "species")
_PLURAL_FIRST_WORDS = frozenset(_names("people, children, men, women"))

# --- sound ------------------------------------------------------------------------------------

_SOUND_FAMILIES: tuple[tuple[Sound, tuple[str, ...]], ...] = (
    # "Alarm" alone is AudioSet's parent of phones, doorbells and sirens too: operators/sounds.py
    # counts it for an alarm only when no more specific family explains it, and names an alarm
    # only when the evidence lasts (a single beep is a beep).
    (
        Sound("alarm", "a beeping alarm sounds", "the alarm is still beeping", urgent=True),
        _names(
            """alarm, alarm clock, smoke detector, smoke alarm, fire alarm, buzzer, car alarm,
            reversing beeps"""
        ),
    ),
    (
        Sound("beep", "something beeps", "the beeping goes on"),
        _names("beep, bleep, beeping, microwave beeping"),
    ),
    (
        Sound("siren", "a siren wails", "the siren is still wailing", urgent=True),
        _names(
            """siren, civil defense siren, police car (siren), ambulance (siren),
            fire truck (siren), emergency vehicle, police siren, ambulance siren, foghorn"""
        ),
    ),
    (
        Sound("bang", "a loud bang is heard", "more loud bangs are heard", urgent=True),
        _names(
            """explosion, gunshot, gunfire, machine gun, fusillade, artillery fire, fireworks,
            firecracker, bang, boom, burst, eruption"""
        ),
    ),
    (
        Sound("shatter", "something shatters", "more things shatter", urgent=True),
        _names("shatter, glass breaking, smash, crash, breaking"),
    ),
    (
        Sound("shout", "someone shouts", "the shouting goes on", urgent=True),
        _names("shout, shouting, yell, screaming, scream, bellow, children shouting, battle cry"),
    ),
    (
        Sound("crying", "someone is crying", "someone is still crying"),
        _names("crying, sobbing, baby cry, infant cry, baby crying, wail, moan, whimper"),
    ),
    (
        Sound("doorbell", "a doorbell rings", "the doorbell rings again"),
        _names("doorbell, ding-dong"),
    ),
    (Sound("knock", "someone knocks", "the knocking goes on"), _names("knock, knocking")),
    (
        Sound("ring", "a phone rings", "the phone is still ringing", False, 0.5, 1.0),
        _names(
            """telephone, telephone bell ringing, ringtone, telephone ringing,
            telephone dialing, dtmf, dial tone, busy signal"""
        ),
    ),
    (
        Sound("bell", "a bell rings", "the bell rings again"),
        _names(
            """bell, church bell, jingle bell, bicycle bell, chime, wind chime, tubular bells,
            ding, change ringing (campanology)"""
        ),
    ),
    (
        Sound("dog", "a dog barks", "the dog is still barking"),
        _names("dog, bark, yip, howl, bow-wow, growling, whimper (dog), dog barking, canidae"),
    ),
    (
        Sound("cat", "a cat meows", "the cat is still meowing"),
        _names("cat, meow, purr, caterwaul, cat meowing"),
    ),
    (
        Sound("birds", "birds are singing", "birds are still singing"),
        _names(
            """bird, bird vocalization, bird call, bird song, chirp, tweet, bird singing, squawk,
            pigeon, coo, caw, hoot"""
        ),
    ),
    (
        Sound("laughter", "someone laughs", "the laughter goes on"),
        _names("laughter, baby laughter, giggle, snicker, belly laugh, chuckle, chortle"),
    ),
    (
        Sound("applause", "people applaud", "the applause goes on"),
        _names("applause, clapping, cheering"),
    ),
    (
        Sound("crowd", "a crowd can be heard", "the crowd can still be heard"),
        _names("crowd, hubbub, speech babble, chatter, children playing, crowd chanting"),
    ),
    (
        Sound("horn", "a horn honks", "the horn honks again"),
        _names("vehicle horn, car horn, honking, toot, air horn, truck horn, train horn"),
    ),
    (
        Sound("traffic", "traffic can be heard", "traffic can still be heard"),
        _names(
            """vehicle, car, motor vehicle (road), traffic noise, roadway noise, traffic,
            car passing by, truck, bus, motorcycle, car engine, engine, idling, engine idling,
            accelerating, revving, vroom"""
        ),
    ),
    (
        Sound("aircraft", "an aircraft can be heard", "the aircraft can still be heard"),
        _names(
            """aircraft, aircraft engine, jet engine, propeller, helicopter, airplane,
            fixed-wing aircraft"""
        ),
    ),
    (
        Sound("train", "a train can be heard", "the train can still be heard"),
        _names("train, rail transport, railroad car, train wheels squealing, subway, metro"),
    ),
    (
        Sound("music", "music is playing", "music is still playing"),
        _names(
            """music, musical instrument, singing, song, choir, guitar, electric guitar,
            acoustic guitar, bass guitar, piano, keyboard (musical), synthesizer, drum, drums,
            drum kit, violin, trumpet, orchestra, pop music, rock music, electronic music,
            classical music, background music, theme music, jingle (music), soundtrack music,
            video game music, dance music, hip hop music, beatboxing, heavy metal, punk rock,
            grunge, progressive rock, rock and roll, psychedelic rock, rhythm and blues, reggae,
            country, swing music, bluegrass, funk, jazz, disco, opera, techno, dubstep,
            drum and bass, electronica, flamenco, blues, a capella, afrobeat, ska, lullaby,
            rapping, yodeling, humming, child singing, synthetic singing"""
        ),
    ),
    (
        Sound("rain", "rain is falling", "rain is still falling"),
        _names("rain, raindrop, rain on surface"),
    ),
    (Sound("thunder", "thunder rumbles", "thunder rumbles again"), _names("thunder, thunderstorm")),
    (
        Sound("wind", "wind is blowing", "the wind is still blowing"),
        _names("wind, rustling leaves"),
    ),
    (
        Sound("water", "water can be heard", "water can still be heard"),
        _names(
            """water, stream, waterfall, ocean, waves, surf, water flowing, ocean waves,
            tap water running, water tap, faucet, splash, splatter, gurgling, pour, trickle,
            dribble"""
        ),
    ),
    (
        Sound("footsteps", "footsteps can be heard", "footsteps can still be heard"),
        _names("walk, footsteps"),
    ),
    (Sound("slam", "a door slams", "a door slams again"), _names("slam, door slamming")),
    (
        Sound("speech", "someone is speaking", "someone is still speaking"),
        _names(
            """speech, child speech, kid speaking, conversation, narration, monologue, babbling,
            speech synthesizer, male speech, man speaking, female speech, woman speaking,
            whispering, speaking"""
        ),
    ),
)

# Tags that say nothing a viewer would care about (acoustic scenes, noise, model artefacts).
_IGNORED_SOUNDS = frozenset(
    _names(
        """silence, inside, outside, small room, large room or hall, public space,
        urban or manmade, rural or natural, noise, static, hum, mains hum, white noise,
        pink noise, environmental noise, sound effect, echo, reverberation, distortion,
        sidetone, cacophony, throbbing, vibration, wind noise (microphone), field recording,
        animal, domestic animals, pets, livestock, farm animals, working animals, wild animals,
        mechanisms, tools, liquid, sine wave, harmonic, chirp tone, pulse, effects unit,
        chorus effect, electronic tuner"""
    )
)
# Tags that say "stationary noise": YAMNet also calls pink or white noise "Waterfall", "Water",
# "Rustle" or "Snake", so a quiet non-urgent sound counts only when it outscores these.
NOISE_TAGS = frozenset(
    _names("noise, white noise, pink noise, static, hum, mains hum, environmental noise, buzz")
)
# Never a concept in any modality: YAMNet gives it ~0.98 in most windows.
_NEVER = frozenset({"silence", "quiet"})
# Capitalised first words of sentence-case labels that stay capitalised ("French horn").
_PROPER_WORDS = frozenset(_names("french, hammond, christmas, middle, african, asian, latin"))

_COMMA = re.compile(r",(?![^()]*\))")
_MUSIC = re.compile(r"\bmusic\b")
_NON_WORD = re.compile(r"[^\w\s'&/-]+")
_PARENTHESES = re.compile(r"\([^)]*\)")
_SPACES = re.compile(r"\s+")
_LEADING = re.compile(
    r"^(?:(?:a|an) (?:photo|picture|image) of (?:a |an |the )?|a |an |the )", re.I
)
_MAX_NOUN_WORDS = 6


def _build_index(families: Iterable[tuple[T, tuple[str, ...]]]) -> dict[str, T]:
    index: dict[str, T] = {}
    for target, names in families:
        for name in names:
            index.setdefault(name.lower(), target)
    return index


_VISUAL_INDEX = _build_index((c, names) for c, names in _VISUAL_FAMILIES.items())
_SOUND_INDEX = _build_index(_SOUND_FAMILIES)
SOUNDS: tuple[Sound, ...] = tuple(sound for sound, _ in _SOUND_FAMILIES)
SOUND_BY_KEY: dict[str, Sound] = {sound.key: sound for sound in SOUNDS}
EVENT_SOUNDS: tuple[str, ...] = ("alarm", "siren", "ring", "doorbell", "beep", "knock")
"""Sound keys that raise ``sound`` events by default (contract §4)."""


def parts(label: str) -> tuple[str, ...]:
    """Lower-cased comma-separated names of a label ("Beep, bleep" -> "beep", "bleep")."""
    return tuple(p for p in (part.strip().lower() for part in _COMMA.split(label)) if p)


def clean_noun(text: str, sentence_case: bool = False) -> str:
    """A label's first name as a plain noun phrase: no parentheses, symbols or leading article.

    ``sentence_case`` labels (AudioSet: "Vacuum cleaner") capitalise their first word only
    because it comes first; other vocabularies (ImageNet: "French horn") only for names.
    """
    first = _PARENTHESES.sub(" ", text).split(",", 1)[0]
    first = _NON_WORD.sub(" ", first)
    first = _SPACES.sub(" ", first.replace("_", " ")).strip(" -/&'")
    while (stripped := _LEADING.sub("", first)) != first:
        first = stripped
    words = first.split()[:_MAX_NOUN_WORDS]
    if words and words[0][:1].isupper() and words[0][1:].islower():
        if len(words) == 1 or (sentence_case and words[0].lower() not in _PROPER_WORDS):
            words[0] = words[0].lower()  # "Person", "Vacuum cleaner": not a name
    return " ".join(words)


def _count_of(noun: str, activity: bool) -> Count:
    lower = noun.lower()
    first, last = lower.split(" ", 1)[0], lower.rsplit(" ", 1)[-1]
    if lower in _MASS_NOUNS or last in _MASS_NOUNS:
        return "mass"
    if activity and last.endswith("ing") and len(last) > 5 and last not in _COUNTABLE_ING:
        return "mass"
    if last in _PLURAL_NOUNS or first in _PLURAL_FIRST_WORDS:
        return "many"
    if last.endswith("s") and not last.endswith(_NOT_PLURAL_ENDINGS) and len(last) > 3:
        return "many"
    return "one"


def plain_concept(text: str, activity: bool = False, sentence_case: bool = False) -> Concept | None:
    """A free-form name (zero-shot vocabulary, fusion class) as a concept; None if unreadable.

    ``activity`` vocabularies (sounds, fusion classes) read "-ing" words as activities
    ("cooking", "typing": no article); elsewhere they are things ("a brambling").
    """
    noun = clean_noun(text, sentence_case)
    if not any(ch.isalpha() for ch in noun) or noun.lower() in _NEVER:
        return None
    return Concept(noun, _count_of(noun, activity))


def _is_dog(name: str) -> bool:
    return name not in _NOT_DOGS and name.endswith(_DOG_SUFFIXES)


def visual_concept(label: str) -> Concept | None:
    """The concept a frame or detector label stands for; None when it says nothing."""
    names = parts(label)
    if not names or names[0] in _NEVER:
        return None
    for name in names:
        if name in _RENAMES:
            return _RENAMES[name]
        if name in _VISUAL_INDEX:
            return _VISUAL_INDEX[name]
    if any(_is_dog(name) for name in names):
        return DOG
    return plain_concept(label)


def _score(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def group_visual(labels: Iterable[Label]) -> list[tuple[Concept, float]]:
    """Concepts of the labels, best first; a family's scores add up (capped at 1).

    Adding is right for the softmax classifiers that split a cat into three cat labels, and
    harmless for sigmoid scores because the cap keeps the result a score.
    """
    totals: dict[Concept, float] = {}
    for label in labels:
        concept = visual_concept(label.label)
        if concept is not None:
            totals[concept] = min(1.0, totals.get(concept, 0.0) + _score(label.score))
    return sorted(totals.items(), key=lambda item: (-item[1], item[0].noun))


def sound_of(label: str) -> Sound | None:
    """The sound family of an audio tag; None when it is not in a family (or is ignored)."""
    names = parts(label)
    for name in names:
        if name in _SOUND_INDEX:
            return _SOUND_INDEX[name]
    if any(_MUSIC.search(name) for name in names):
        return _SOUND_INDEX["music"]
    return None


def ignored_sound(label: str) -> bool:
    """Acoustic-scene and noise tags ("Silence", "Inside, small room") that go unmentioned."""
    names = parts(label)
    return not names or any(name in _IGNORED_SOUNDS or name in _NEVER for name in names)


def group_sounds(labels: Iterable[Label]) -> list[tuple[Sound, float]]:
    """Sound families of the tags with their best score; urgent ones first, then by score."""
    best: dict[Sound, float] = {}
    for label in labels:
        if ignored_sound(label.label):
            continue
        sound = sound_of(label.label)
        if sound is not None:
            best[sound] = max(best.get(sound, 0.0), _score(label.score))
    return sorted(best.items(), key=lambda item: (not item[0].urgent, -item[1], item[0].key))


_A_BEFORE = ("uni", "use", "usu", "uti", "ure", "uro", "eu", "one", "once", "ufo", "ubiq", "uk")
_AN_BEFORE = ("hour", "honest", "honor", "honour", "heir")
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def with_article(noun: str) -> str:
    """``noun`` with "a" or "an" by how it sounds: an espresso, a unicycle, an hour, an RV."""
    if not noun:
        return noun
    word = re.split(r"[\s-]", noun, maxsplit=1)[0]
    lower = word.lower()
    if word.isalpha() and (len(word) == 1 or (word.isupper() and len(word) <= 4)):
        an = word[0].upper() in _VOWEL_SOUND_LETTERS  # read letter by letter: an RV, a TV
    elif lower[:1].isdigit():
        an = lower.startswith("8") or re.match(r"1[18](\D|$)", lower) is not None
    elif lower.startswith(_AN_BEFORE):
        an = True
    elif lower.startswith(_A_BEFORE):
        an = False
    else:
        an = lower[:1] in "aeiou"
    return f"{'an' if an else 'a'} {noun}"
