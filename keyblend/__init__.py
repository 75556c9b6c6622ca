"""KeyBlend: suggests which catalog products a creator should tag on a new post.

from keyblend import Catalog, Engine, demo_catalog
engine = Engine.build(demo_catalog())
for rec in engine.suggest("Summer glow with vitamin C #summerglowup", k=3):
    print(rec)
"""

from consumer.catalog import Catalog, Product
from consumer.demo import demo_catalog, demo_pebbles
from consumer.history import History
from consumer.matcher import Engine, EngineConfig, Recommendation
from consumer.settings import Settings

__all__ = [
    "Catalog",
    "Engine",
    "EngineConfig",
    "History",
    "Product",
    "Recommendation",
    "Settings",
    "demo_catalog",
    "demo_pebbles",
]
