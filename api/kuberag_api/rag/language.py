"""Telling Spanish from English, and the reference sentences that locate each language in an
embedding space.

A multilingual embedding model places texts partly by topic and partly by language: with
multilingual-e5-small, a Spanish question lies closer to unrelated Spanish text than to the English
passage that answers it. Subtracting each language's centroid from the vectors (centring by
language) removes most of that pull (Libovický et al., "On the language neutrality of pre-trained
multilingual representations", 2020). The centroids come from the parallel sentences below, which
are unrelated to any corpus (everyday topics), so they do not depend on what a service indexes.
"""

from __future__ import annotations

import re

SPANISH_HINTS = frozenset(
    "qué cómo cuál cuáles cuándo dónde quién por para una los las del está están puedo puede hay "
    "el la es son se con sin".split()
)

ENGLISH_HINTS = frozenset(
    "the is are what how which why when where who do does can you your of to and in for with this that "
    "from by on it be not".split()
)


def language_of(text: str) -> str:
    """"es" or "en", from common words (enough to tell the two languages this service answers in)."""
    words = re.findall(r"\w+", text.lower())
    if "¿" in text or "¡" in text:
        return "es"
    spanish = sum(w in SPANISH_HINTS for w in words)
    english = sum(w in ENGLISH_HINTS for w in words)
    return "es" if spanish > english or (spanish >= 2 and spanish == english) else "en"


LANGUAGES = ("en", "es")

# Parallel sentences: the same 32 everyday statements in each language.
REFERENCE_EN = [
    "The weather was cold and rainy for most of the week.",
    "She cooked rice with vegetables and served it with fresh bread.",
    "The train to the coast leaves every morning at eight.",
    "Our team won the match after a difficult second half.",
    "The meeting was moved to Thursday afternoon because of the holiday.",
    "Drinking enough water helps the body recover after exercise.",
    "My grandparents lived in a small village near the mountains.",
    "The museum opened a new exhibition about ancient trade routes.",
    "He forgot his umbrella at the office and walked home in the rain.",
    "The children planted tomatoes and beans in the school garden.",
    "Prices in the market went up again this month.",
    "The library is closed on Sundays and public holidays.",
    "They painted the kitchen walls a light shade of blue.",
    "The doctor recommended a short walk after every meal.",
    "Many birds fly south when the days get shorter.",
    "The bridge was repaired last summer and is open to traffic again.",
    "She is learning to play the guitar in the evenings.",
    "The hotel room had a view of the old harbour.",
    "Please remember to turn off the lights when you leave.",
    "The company hired ten new employees for its customer service team.",
    "A strong wind knocked down several trees in the park.",
    "We shared a cake to celebrate my sister's birthday.",
    "The river floods the fields almost every spring.",
    "The concert started late, but the music was wonderful.",
    "He reads the newspaper every morning before work.",
    "The farmers sell cheese and honey at the weekly market.",
    "The new school has large windows and a sports hall.",
    "Tourists queued for hours to visit the cathedral.",
    "Our neighbours adopted a dog from the animal shelter.",
    "The recipe needs two eggs, flour, sugar and a little milk.",
    "The election results will be announced tomorrow night.",
    "It takes about twenty minutes to walk to the station.",
]
REFERENCE_ES = [
    "El tiempo fue frío y lluvioso durante casi toda la semana.",
    "Ella cocinó arroz con verduras y lo sirvió con pan recién hecho.",
    "El tren a la costa sale todas las mañanas a las ocho.",
    "Nuestro equipo ganó el partido tras una segunda parte difícil.",
    "La reunión se trasladó al jueves por la tarde por el día festivo.",
    "Beber suficiente agua ayuda al cuerpo a recuperarse después del ejercicio.",
    "Mis abuelos vivían en un pueblo pequeño cerca de las montañas.",
    "El museo inauguró una nueva exposición sobre antiguas rutas comerciales.",
    "Olvidó el paraguas en la oficina y volvió a casa andando bajo la lluvia.",
    "Los niños plantaron tomates y judías en el huerto del colegio.",
    "Los precios del mercado volvieron a subir este mes.",
    "La biblioteca cierra los domingos y los días festivos.",
    "Pintaron las paredes de la cocina de un azul claro.",
    "El médico recomendó un paseo corto después de cada comida.",
    "Muchas aves vuelan hacia el sur cuando los días se acortan.",
    "El puente se reparó el verano pasado y vuelve a estar abierto al tráfico.",
    "Está aprendiendo a tocar la guitarra por las tardes.",
    "La habitación del hotel tenía vistas al viejo puerto.",
    "Por favor, acuérdate de apagar las luces cuando salgas.",
    "La empresa contrató a diez nuevos empleados para su equipo de atención al cliente.",
    "Un viento fuerte derribó varios árboles en el parque.",
    "Compartimos una tarta para celebrar el cumpleaños de mi hermana.",
    "El río inunda los campos casi todas las primaveras.",
    "El concierto empezó tarde, pero la música fue maravillosa.",
    "Lee el periódico todas las mañanas antes de ir a trabajar.",
    "Los agricultores venden queso y miel en el mercado semanal.",
    "El nuevo colegio tiene ventanas grandes y un polideportivo.",
    "Los turistas hicieron cola durante horas para visitar la catedral.",
    "Nuestros vecinos adoptaron un perro del refugio de animales.",
    "La receta lleva dos huevos, harina, azúcar y un poco de leche.",
    "Los resultados de las elecciones se anunciarán mañana por la noche.",
    "Se tarda unos veinte minutos en llegar andando a la estación.",
]

REFERENCE = {"en": REFERENCE_EN, "es": REFERENCE_ES}
