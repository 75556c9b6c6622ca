"""The project's own demo data: an invented catalog, posts, tags and malformed events.

Nothing here is real: eight invented brands, about three hundred products and forty
posts, written to look like the platform's exports (filler keywords such as "trendy",
emoji and accents in names, near-duplicate listings, unpublished and draft products,
hashtags run together). Everything is deterministic: the same data on every machine,
no network, no randomness beyond a fixed seed.

``write_demo_files`` writes the same catalog in every format the readers accept (JSON
Lines, the HYPD-style CSV with keyword list literals, MongoDB extended JSON), plus posts
and tags files, so a demo or a test exercises every reader on known-good data.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from consumer.catalog import Catalog
from consumer.settings import Settings
from schemas.events import (
    Label,
    PebbleUploaded,
    ProductRecord,
    ProductSuggestions,
    RejectedEvent,
)

SEED = 20240601

# Words real exports put on thousands of unrelated products (see text.FILLER_WORDS).
_FILLER = ("trendy", "stylish", "quirky", "party", "office", "college", "the", "natural",
           "ingredients", "suitable", "product", "benefits", "long", "lasting", "casual")


@dataclass(frozen=True)
class Brand:
    id: str
    name: str
    handle: str  # the @handle / #hashtag creators use
    cat_one: str
    cat_two: str
    separator: str  # how the brand writes a variant into a product name


@dataclass(frozen=True)
class _Template:
    base: str
    cat_three: str
    keywords: str  # comma-separated
    price: int  # MRP of the first variant, INR
    variants: str  # "|"-separated; empty: a single listing


BRANDS: tuple[Brand, ...] = (
    Brand("br-glowora", "Glowora", "glowora", "Beauty", "Skincare", " – "),
    Brand("br-kinetiq", "Kinetiq Active", "kinetiqactive", "Fashion", "Activewear", " ("),
    Brand("br-rangmahal", "Rangmahal", "rangmahal", "Fashion", "Ethnic Wear", " - "),
    Brand("br-padukaa", "Padukaa", "padukaa", "Fashion", "Footwear", " | "),
    Brand("br-zevar", "Zevar & Co", "zevarandco", "Accessories", "Jewellery", " - "),
    Brand("br-fuelfit", "Fuelfit Nutrition", "fuelfit", "Health", "Supplements", " – "),
    Brand("br-totebird", "Totebird", "totebird", "Accessories", "Bags", " ("),
    Brand("br-tresse", "Tressé", "tresse", "Beauty", "Haircare", " – "),
)

_T = _Template
_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "br-glowora": (
        _T("Vitamin C Glow Serum", "Serums",
           "vitamin c, serum, glow, brightening, dark spots, radiance, face serum, summer", 899,
           "15 ml|30 ml"),
        _T("10% Niacinamide Serum", "Serums",
           "niacinamide, serum, pores, oil control, acne, oily skin, blemish", 699, "30 ml"),
        _T("Hyaluronic Dew Gel Moisturiser", "Moisturisers",
           "hyaluronic acid, hydration, gel, moisturiser, dewy, lightweight", 749, "50 g|100 g"),
        _T("SPF 50 PA++++ Sunscreen", "Sunscreen",
           "sunscreen, spf, sun protection, uv, summer, beach, no white cast", 599,
           "50 ml|Tinted 50 ml"),
        _T("Crème Brûlée Lip Balm", "Lip Care",
           "lip balm, lips, tinted, moisturising, dessert, soft lips", 299, "Caramel|Berry|Nude"),
        _T("Rice Water Foaming Cleanser", "Cleansers",
           "cleanser, face wash, rice water, foaming, gentle, oily skin", 449, "100 ml|200 ml"),
        _T("Ceramide Night Repair Cream", "Moisturisers",
           "ceramide, night cream, repair, barrier, moisturiser, night routine", 999, ""),
        _T("Under-Eye Brightening Cream", "Eye Care",
           "under eye, dark circles, puffiness, eye cream, caffeine, tired eyes", 549, ""),
        _T("Summer Glow Kit ☀️", "Kits",
           "summer, glow, kit, vitamin c, sunscreen, gift, combo", 1999, ""),
        _T("AHA BHA Peeling Solution", "Exfoliators",
           "aha, bha, exfoliant, peeling, texture, glow", 649, "30 ml"),
        _T("“Dewy Days” Face Mist", "Toners",
           "face mist, toner, dewy, hydration, refresh, rose water", 399, "100 ml"),
        _T("Aloe Calm Sheet Mask", "Masks",
           "sheet mask, aloe vera, calming, soothing, hydration, self care", 149,
           "Pack of 1|Pack of 5"),
        _T("Kumkumadi Glow Face Oil", "Face Oils",
           "kumkumadi, saffron, face oil, ayurveda, glow, radiance", 1199, "15 ml|30 ml"),
        _T("Clay Detox Face Mask", "Masks",
           "clay mask, detox, pores, kaolin, oily skin, face mask", 499, "50 g|100 g"),
        _T("Peptide Firming Eye Serum", "Eye Care",
           "peptide, eye serum, fine lines, firming, under eye", 849, ""),
        _T("Sunkissed Tinted Lip Oil", "Lip Care",
           "lip oil, tinted, glossy lips, shine, summer", 449, "Peach|Coral"),
        _T("Retinol Night Serum", "Serums",
           "retinol, night serum, anti ageing, fine lines, texture, night routine", 1099,
           "0.2%|0.5%"),
    ),
    "br-kinetiq": (
        _T("High-Waist Leggings", "Leggings",
           "leggings, high waist, squat proof, gym, workout, yoga, activewear", 1499,
           "Black|Rust|Olive|Navy|Wine|Teal"),
        _T("Longline Sports Bra", "Sports Bras",
           "sports bra, medium support, gym, workout, padded, activewear", 999,
           "Black|Rust|Lilac|Sage|White"),
        _T("Dri-Fit Running Tee", "T-Shirts",
           "running, tee, t-shirt, dri fit, quick dry, breathable, men", 899,
           "Charcoal|White|Neon|Navy"),
        _T("Running Shorts 5\"", "Shorts",
           "running shorts, shorts, lightweight, marathon, men, pockets", 799, "Black|Grey|Navy"),
        _T("Seamless Yoga Set", "Co-ords",
           "yoga, seamless, co-ord, set, stretch, buttery soft, women", 2499,
           "Sage|Mauve|Sand|Black"),
        _T("Zip-Up Training Jacket", "Jackets",
           "jacket, zip, training, gym, windcheater, athleisure", 1999, "Black|Rust"),
        _T("Tapered Joggers", "Joggers",
           "joggers, track pants, athleisure, travel, comfy, unisex", 1299,
           "Black|Heather Grey|Olive|Navy"),
        _T("Oversized Gym Tank", "T-Shirts",
           "tank top, oversized, gym, muscle tee, men, workout", 699, "Black|White"),
        _T("Flared Yoga Pants", "Leggings",
           "flared, yoga pants, bootcut, stretch, women, yoga", 1599, "Black|Mocha|Plum"),
        _T("Compression Tights", "Leggings",
           "compression, tights, running, men, recovery, base layer", 1399, "Black|Navy"),
        _T("Training Shorts with Liner", "Shorts",
           "training shorts, liner, gym, hiit, men, quick dry", 999, "Black|Olive|Blue"),
    ),
    "br-rangmahal": (
        _T("Chanderi Kurta Set", "Kurta Sets",
           "kurta set, chanderi, festive, diwali, women, dupatta, ethnic", 3499,
           "Mustard|Teal|Rani Pink|Ivory|Wine"),
        _T("Cotton Straight Kurta", "Kurtas",
           "kurta, cotton, straight, office wear, daily wear, women, printed", 1299,
           "Indigo|White|Rust|Mint|Black"),
        _T("Mirror-Work Lehenga", "Lehengas",
           "lehenga, mirror work, mehendi, wedding, sangeet, twirl, bridesmaid", 7999,
           "Green|Yellow|Peach"),
        _T("Banarasi Silk Saree", "Sarees",
           "saree, banarasi, silk, handloom, wedding, zari, festive", 6499,
           "Maroon|Emerald|Gold|Navy"),
        _T("Naïve Linen Kurta", "Kurtas",
           "linen, kurta, summer, breathable, minimal, women", 1599, "Beige|Sky|Sage"),
        _T("Printed Palazzo Pants", "Bottoms",
           "palazzo, pants, printed, flowy, cotton, ethnic bottoms", 799, "Black|Indigo"),
        _T("Phulkari Dupatta", "Dupattas",
           "dupatta, phulkari, embroidered, punjabi, festive", 999, "Orange|Pink"),
        _T("Men's Nehru Jacket", "Men's Ethnic",
           "nehru jacket, men, wedding, groom, festive, bandhgala", 2999, "Navy|Ivory|Wine"),
        _T("Men's Silk Kurta", "Men's Ethnic",
           "kurta, men, silk, festive, wedding, groom squad, pyjama", 2499, "Ivory|Mint|Peach"),
        _T("Anarkali Gown", "Gowns",
           "anarkali, gown, flared, festive, party wear, embroidered", 3999, "Wine|Navy|Peach"),
        _T("Block-Print Co-ord Set", "Co-ords",
           "co-ord, block print, cotton, summer, jaipur, set", 2199, "Indigo|Rust|Green"),
        _T("Bandhani Dupatta", "Dupattas",
           "bandhani, dupatta, tie dye, gujarati, navratri, festive", 899, "Red|Yellow|Pink"),
    ),
    "br-padukaa": (
        _T("Handcrafted Kolhapuri Chappals", "Flats",
           "kolhapuri, chappals, leather, handcrafted, ethnic, flats, handmade", 1299,
           "Tan|Black|Gold|Brown"),
        _T("Chunky White Sneakers", "Sneakers",
           "sneakers, chunky, white, everyday, streetwear, unisex, shoes", 2999,
           "White|White-Green|White-Pink"),
        _T("Block Heel Sandals", "Heels",
           "block heels, sandals, comfortable, party, sangeet, heels", 1899,
           "Nude|Black|Gold|Silver"),
        _T("Waterproof Slides", "Slides",
           "slides, waterproof, monsoon, rain, slippers, comfy", 599, "Black|Olive"),
        _T("Embroidered Juttis", "Flats",
           "jutti, mojari, embroidered, wedding, ethnic, punjabi", 1499, "Red|Gold|Pastel|Black"),
        _T("Trail Running Shoes", "Sports Shoes",
           "running shoes, trail, grip, marathon, sports shoes, men", 3999, "UK 8|UK 10"),
        _T("Canvas Slip-Ons", "Casual Shoes",
           "slip ons, canvas, casual, everyday, loafers", 1099, "White|Navy"),
        _T("Café Mocha Loafers", "Casual Shoes",
           "loafers, suede, office, smart casual, men", 2499, "UK 8|UK 9"),
        _T("Platform Wedges", "Heels",
           "wedges, platform, party, comfortable, heels, summer", 1999, "Tan|White|Black"),
        _T("Leather Chelsea Boots", "Boots",
           "chelsea boots, leather, boots, winter, men, smart", 4499, "Black|Brown"),
        _T("Kids' Velcro Sneakers", "Kids",
           "kids shoes, velcro, sneakers, school, light up", 1199, "Blue|Pink|White"),
    ),
    "br-zevar": (
        _T("Oxidised Silver Jhumkas", "Earrings",
           "jhumka, jhumkas, oxidised, silver, earrings, ethnic, boho", 699,
           "Small|Medium|Large|Peacock"),
        _T("Jhumka “Chandbali” Earrings", "Earrings",
           "chandbali, earrings, kundan, festive, wedding, gold plated", 1299, "Gold|Rose Gold"),
        _T("Layered Gold-Plated Chain", "Necklaces",
           "layered necklace, chain, gold plated, minimal, anti tarnish, everyday", 999,
           "Double|Triple"),
        _T("Temple Jewellery Necklace Set", "Necklaces",
           "temple jewellery, necklace, south indian, bridal, wedding, lakshmi", 3499, ""),
        _T("Rosé Gold Hoops 💫", "Earrings",
           "hoops, earrings, rose gold, minimal, everyday, hypoallergenic, anti tarnish", 599,
           "20 mm|30 mm|40 mm"),
        _T("Kundan Maang Tikka", "Hair Jewellery",
           "maang tikka, kundan, bridal, wedding, forehead, ethnic", 899, ""),
        _T("Oxidised Statement Ring", "Rings",
           "ring, oxidised, adjustable, statement, boho, silver", 349, "Lotus|Peacock"),
        _T("Pearl Drop Earrings", "Earrings",
           "pearl, drop earrings, elegant, office, minimal", 799, ""),
        _T("Charm Bracelet", "Bracelets",
           "bracelet, charm, gold plated, gift, minimal", 899, "Evil Eye|Initial|Heart"),
        _T("Silver Toe Rings", "Rings",
           "toe rings, silver, bichiya, traditional, bridal", 299, "Plain|Floral"),
        _T("Beaded Anklet", "Anklets",
           "anklet, beaded, payal, boho, beach, summer", 399, "Turquoise|Pearl|Black"),
        _T("Nose Pin “Nath”", "Nose Pins",
           "nose pin, nath, kundan, bridal, traditional, clip on", 499, "Gold|Silver"),
        _T("Statement Choker", "Necklaces",
           "choker, statement, kundan, party, festive, necklace", 1699, "Green|Ruby|Pearl"),
    ),
    "br-fuelfit": (
        _T("Plant Protein Powder", "Protein",
           "plant protein, vegan, protein powder, pea protein, smoothie, no bloating", 2199,
           "Chocolate 500 g|Chocolate 1 kg|Vanilla 1 kg"),
        _T("Whey Isolate", "Protein",
           "whey, isolate, protein, recovery, post workout, gains, muscle", 3499,
           "Chocolate 1 kg|Cafe Mocha 1 kg"),
        _T("Pre-Workout Energy", "Pre-Workout",
           "pre workout, energy, beast mode, caffeine, pump, gym", 1599, "Berry|Lemon"),
        _T("Electrolyte Fizz Tablets", "Hydration",
           "electrolytes, hydration, fizz, tablets, summer, running, sports drink", 499,
           "Orange|Lime|Watermelon"),
        _T("Daily Multivitamin", "Vitamins",
           "multivitamin, vitamins, daily, immunity, wellness, tablets", 699, "Men|Women"),
        _T("Omega 3 Fish Oil", "Vitamins",
           "omega 3, fish oil, heart, joints, wellness, capsules", 899, "60 caps|120 caps"),
        _T("Biotin Hair Gummies", "Vitamins",
           "biotin, gummies, hair growth, nails, skin, vitamins", 799, "30 days|60 days"),
        _T("BCAA Recovery", "Recovery",
           "bcaa, recovery, amino acids, intra workout, muscle", 1299, "Mango|Blue Raspberry"),
        _T("Steel Shaker Bottle", "Accessories",
           "shaker, bottle, steel, gym, protein shaker, leak proof", 499, "700 ml"),
        _T("Creatine Monohydrate", "Performance",
           "creatine, monohydrate, strength, power, gym, unflavoured", 899, "250 g|500 g"),
        _T("Apple Cider Vinegar Fizz", "Wellness",
           "apple cider vinegar, acv, effervescent, digestion, weight management", 549,
           "Lemon|Mango"),
        _T("Collagen Glow Powder", "Beauty Supplements",
           "collagen, glow, skin, beauty supplement, vitamin c, hair", 1299, "Berry|Orange"),
    ),
    "br-totebird": (
        _T("Laptop Tote", "Totes",
           "laptop bag, tote, work bag, office, 15 inch laptop, vegan leather", 2499,
           "Black|Tan|Olive|Wine"),
        _T("Weekender Duffle Bag", "Travel Bags",
           "duffle, weekender, travel bag, gym bag, getaway, cabin", 3299, "Navy|Black"),
        _T("Mini Sling Bag", "Slings",
           "sling bag, crossbody, mini, concert, party, phone bag", 1199, "Lilac|Black|Cream|Red"),
        _T("Jute Market Tote", "Totes",
           "jute, tote, sustainable, eco friendly, market bag, shopping", 699, "Natural|Printed"),
        _T("Café Mocha Crossbody", "Slings",
           "crossbody, sling, vegan leather, everyday, brown", 1799, ""),
        _T("Everyday Backpack", "Backpacks",
           "backpack, college, laptop, water resistant, everyday, travel", 2199, "Grey|Black"),
        _T("Quilted Clutch", "Clutches",
           "clutch, quilted, party, wedding, evening bag", 1499, "Gold|Silver"),
        _T("Gym Drawstring Bag", "Gym Bags",
           "gym bag, drawstring, workout, shoe compartment", 599, "Black|Grey"),
        _T("Canvas Tote with Zip", "Totes",
           "canvas tote, zip, college, everyday, printed", 899, "Beige|Black|Floral"),
        _T("Trolley Cabin Suitcase", "Luggage",
           "suitcase, trolley, cabin, hard shell, travel, luggage", 5499, "Teal|Black|Lilac"),
        _T("Laptop Sleeve 14\"", "Laptop Bags",
           "laptop sleeve, padded, 14 inch laptop, work, office", 999, "Grey|Pink"),
        _T("Woven Potli Bag", "Clutches",
           "potli, woven, wedding, ethnic, festive, drawstring", 799, "Gold|Pink|Green"),
    ),
    "br-tresse": (
        _T("Onion & Rosemary Hair Oil", "Hair Oils",
           "hair oil, onion, rosemary, hair fall, hair growth, scalp, dandruff", 549,
           "100 ml|200 ml"),
        _T("Curl Defining Cream", "Styling",
           "curl cream, curly hair, frizz, curls, curly girl method, humidity", 699, "150 ml"),
        _T("Leave-In Conditioner", "Conditioners",
           "leave in, conditioner, frizz, detangling, curly hair, hydration", 599, "150 ml"),
        _T("Sulphate-Free Shampoo", "Shampoo",
           "shampoo, sulphate free, gentle, daily wash, hair care, paraben free", 499,
           "250 ml|500 ml"),
        _T("Silk Protein Conditioner", "Conditioners",
           "conditioner, silk protein, smooth, shine, hair care", 549, "250 ml"),
        _T("Tressé Argan Hair Mask", "Hair Masks",
           "hair mask, argan, keratin, smooth, deep conditioning, repair", 799, "200 g"),
        _T("Anti-Dandruff Scalp Serum", "Scalp Care",
           "scalp serum, dandruff, itchy scalp, tea tree, scalp care", 649, ""),
        _T("Heat Protect Spray", "Styling",
           "heat protectant, spray, straightener, blow dry, styling", 449, ""),
        _T("Wide-Tooth Neem Comb", "Tools",
           "comb, neem wood, wide tooth, detangling, curly hair", 249, ""),
        _T("Satin Scrunchies", "Accessories",
           "scrunchies, satin, hair ties, no breakage, hair accessories", 299,
           "Pack of 3|Pack of 6"),
        _T("Rosemary Hair Growth Serum", "Hair Serums",
           "rosemary, hair serum, hair growth, thinning, scalp, redensyl", 699, "50 ml|100 ml"),
        _T("Hibiscus Hair Cleanser", "Shampoo",
           "hibiscus, shampoo, cleanser, ayurveda, shine, hair fall", 449, "200 ml|400 ml"),
        _T("Dry Shampoo", "Styling",
           "dry shampoo, oily scalp, volume, refresh, no wash", 399, "Classic|Tinted"),
        _T("Bond Repair Treatment", "Hair Masks",
           "bond repair, bleached hair, damage, treatment, coloured hair", 1199, "100 ml"),
    ),
}

# Products listed twice with almost the same name, as real catalogs have:
# (brand id, the listing it copies, name as listed the second time).
_NEAR_DUPLICATES: tuple[tuple[str, str, str], ...] = (
    ("br-glowora", "Vitamin C Glow Serum – 30 ml", "Vitamin C Glow Serum - 30ml"),
    ("br-kinetiq", "High-Waist Leggings (Black)", "High Waist Leggings (Black)"),
    ("br-zevar", "Oxidised Silver Jhumkas - Small", "Oxidized Silver Jhumka"),
)


def _variant_name(brand: Brand, base: str, variant: str) -> str:
    if not variant:
        return base
    if brand.separator == " (":
        return f"{base} ({variant})"
    return f"{base}{brand.separator}{variant}"


@dataclass(frozen=True)
class _Listing:
    product: ProductRecord
    base: str


@lru_cache(maxsize=1)
def _listings() -> tuple[_Listing, ...]:
    rng = random.Random(SEED)
    out: list[_Listing] = []
    n = 0
    for brand in BRANDS:
        for template in _TEMPLATES[brand.id]:
            variants = template.variants.split("|") if template.variants else [""]
            for v, variant in enumerate(variants):
                keywords = [k.strip() for k in template.keywords.split(",")]
                if variant:
                    keywords.append(variant.lower())
                keywords += rng.sample(_FILLER, rng.randint(2, 6))  # as real exports do
                keywords.append(brand.name.lower())
                mrp = float(template.price + 100 * v)
                discount = rng.choice((0.0, 0.0, 0.1, 0.2, 0.3))
                retail: float | None = float(round(mrp * (1 - discount)))
                base_price: float | None = mrp
                if n % 29 == 7:
                    retail = None  # some exports lack a price
                if n % 41 == 11:
                    base_price = None
                status = "published"
                draw = rng.random()
                if draw < 0.06:
                    status = "unpublished"
                elif draw < 0.09:
                    status = "draft"
                elif draw < 0.14:
                    status = "active"  # another spelling of published
                product = ProductRecord(
                    id=f"{0x3a00 + 7 * n:04x}",
                    name=_variant_name(brand, template.base, variant),
                    brand_id=brand.id,
                    brand_name=brand.name,
                    keywords=keywords,
                    retail_price=retail,
                    base_price=base_price,
                    cat_one=brand.cat_one,
                    cat_two=brand.cat_two,
                    cat_three=template.cat_three,
                    status=status,
                )
                out.append(_Listing(product, template.base))
                n += 1
        if brand.cat_one in ("Beauty", "Health"):  # combo listings, as beauty brands sell
            templates = _TEMPLATES[brand.id]
            for first, second in itertools.pairwise(templates):
                name = f"{first.base} + {second.base} Combo"
                keywords = [*first.keywords.split(", ")[:4], *second.keywords.split(", ")[:4],
                            "combo", "gift set", *rng.sample(_FILLER, 3)]
                mrp = float(first.price + second.price)
                product = ProductRecord(
                    id=f"{0x3a00 + 7 * n:04x}", name=name, brand_id=brand.id,
                    brand_name=brand.name, keywords=keywords, retail_price=round(mrp * 0.85),
                    base_price=mrp, cat_one=brand.cat_one, cat_two=brand.cat_two,
                    cat_three="Combos", status="draft" if rng.random() < 0.05 else "published",
                )
                out.append(_Listing(product, name))
                n += 1
    for brand_id, listed, name in _NEAR_DUPLICATES:
        original = next(x for x in out if x.product.name == listed
                        and x.product.brand_id == brand_id)
        data = original.product.model_dump() | {"id": f"{0x3a00 + 7 * n:04x}", "name": name,
                                                 "status": "published"}
        out.append(_Listing(ProductRecord.model_validate(data), original.base))
        n += 1
    return tuple(out)


def demo_products() -> list[ProductRecord]:
    """About 300 invented products over eight brands, some unpublished or in draft."""
    return [listing.product for listing in _listings()]


def demo_catalog() -> Catalog:
    """A fresh catalog of the demo products (a new object each call: catalogs are mutable)."""
    return Catalog(demo_products())


def _pick(base: str, variant: int = 0) -> str:
    """The id of the ``variant``-th published listing of a base product."""
    ids = [x.product.id for x in _listings() if x.base == base and x.product.is_published]
    if not ids:  # tagged while published, unpublished since: real histories have these
        ids = [x.product.id for x in _listings() if x.base == base]
    if not ids:
        raise LookupError(f"no demo product {base!r}")
    return ids[min(variant, len(ids) - 1)]


@dataclass(frozen=True)
class _Post:
    caption: str
    hashtags: str
    interests: str
    genders: str
    ages: str
    tags: tuple[tuple[str, int], ...]  # (base product, variant) tagged on the post
    brands: tuple[str, ...] = ()  # brand ids the platform attached
    already_tagged: int = 0  # how many of ``tags`` the creator tagged at upload


_P = _Post
_F, _M, _U = "female", "male", "female,male"
_A = "18-24,25-34"
_POSTS: tuple[_Post, ...] = (
    _P("Summer glow serum routine ☀️✨ My skin has never looked this bright: vitamin C every "
       "morning with @glowora #summerglowup #glowora", "summerglowup skincare vitaminc glowora",
       "skincare,beauty,glow", _F, _A,
       (("Vitamin C Glow Serum", 1), ("SPF 50 PA++++ Sunscreen", 0)), ("br-glowora",)),
    _P("Oily skin? 🙋‍♀️ Niacinamide changed my pores game. Night routine ft. @glowora.official\n"
       "#oilyskinproblems #skincareroutine", "oilyskinproblems skincareroutine",
       "skincare,acne,night routine", _F, "18-24",
       (("10% Niacinamide Serum", 0), ("Rice Water Foaming Cleanser", 0),
        ("Ceramide Night Repair Cream", 0)), (), 1),
    _P("Sunscreen is non-negotiable 🌞 reapplying every 2 hours on my Goa beach trip "
       "#spfeveryday #sunsafe", "spfeveryday sunsafe beachday", "skincare,travel,summer", _U, _A,
       (("SPF 50 PA++++ Sunscreen", 1),), ("br-glowora",)),
    _P("A lip balm that tastes like dessert?? Crème brûlée 😍🍮 #lipcare #lipbalmaddict",
       "lipcare lipbalmaddict", "beauty,lips", _F, "18-24",
       (("Crème Brûlée Lip Balm", 0), ("Crème Brûlée Lip Balm", 1))),
    _P("Tired eyes after exam week 😴 under eye cream + sheet mask night = saviour "
       "#selfcaresunday", "selfcaresunday darkcircles", "self care,skincare", _F, "18-24",
       (("Under-Eye Brightening Cream", 0), ("Aloe Calm Sheet Mask", 1)), (), 1),
    _P("Leg day in my new high-waist leggings 🏋️‍♀️ squat proof & zero see-through! "
       "@kinetiqactive #legday #kinetiqactive #gymwear", "legday kinetiqactive gymwear",
       "workout,gym,activewear", _F, _A,
       (("High-Waist Leggings", 1), ("Longline Sports Bra", 1)), ("br-kinetiq",)),
    _P("Morning 5k 🏃‍♂️ this dri-fit tee kept me cool the whole way #runnersofindia #morningrun",
       "runnersofindia morningrun", "running,fitness", _M, "25-34",
       (("Dri-Fit Running Tee", 0), ("Running Shorts 5\"", 0)), (), 1),
    _P("Yoga flow on the terrace 🧘‍♀️🌅 the seamless set is sooo buttery soft "
       "#yogaeveryday #yogawear", "yogaeveryday yogawear", "yoga,wellness", _F, "25-34",
       (("Seamless Yoga Set", 0),)),
    _P("Earthy, rusty colours for the gym 🔥 co-ord goals with @kinetiqactive #athleisure "
       "#gymootd", "athleisure gymootd", "gym,fashion,activewear", _F, _A,
       (("Longline Sports Bra", 1), ("High-Waist Leggings", 1), ("Zip-Up Training Jacket", 1)),
       ("br-kinetiq",)),
    _P("Beast mode 💪 pre-workout from @fuelfit and my favourite joggers from @kinetiqactive "
       "#beastmode #preworkout", "beastmode preworkout gymlife", "gym,supplements,workout", _M,
       _A, (("Pre-Workout Energy", 0), ("Tapered Joggers", 0), ("Steel Shaker Bottle", 0)),
       ("br-fuelfit", "br-kinetiq")),
    _P("Festive season is here 🪔 this chanderi kurta set in mustard is everything "
       "#diwalioutfit #ethnicwear #rangmahal", "diwalioutfit ethnicwear rangmahal",
       "ethnic wear,festive,fashion", _F, _A,
       (("Chanderi Kurta Set", 0), ("Oxidised Silver Jhumkas", 1)), ("br-rangmahal",), 1),
    _P("Mehendi look 💚 this lehenga twirls all night long #mehendiceremony #weddingseason",
       "mehendiceremony weddingseason", "wedding,ethnic wear", _F, _A,
       (("Mirror-Work Lehenga", 0), ("Phulkari Dupatta", 0),
        ("Handcrafted Kolhapuri Chappals", 2))),
    _P("Office-friendly cotton kurta for a Monday 🌸 #workwear #kurtalove",
       "workwear kurtalove officelook", "work wear,office look", _F, "25-34",
       (("Cotton Straight Kurta", 0), ("Printed Palazzo Pants", 0))),
    _P("Saree, not sorry 🥻 handloom Banarasi silk for my cousin's shaadi #sareelove #handloom",
       "sareelove handloom", "saree,wedding,ethnic wear", _F, "25-34",
       (("Banarasi Silk Saree", 0), ("Temple Jewellery Necklace Set", 0)), (), 1),
    _P("Groom squad in matching Nehru jackets 🤵🏽 #groomsquad #shaadiseason",
       "groomsquad shaadiseason", "wedding,menswear", _M, _A,
       (("Men's Nehru Jacket", 0), ("Men's Silk Kurta", 0), ("Embroidered Juttis", 0)),
       ("br-rangmahal",)),
    _P("These kolhapuris go with every single kurta 👡 handcrafted leather #kolhapuri "
       "#handmadeinindia", "kolhapuri handmadeinindia", "footwear,ethnic", _F, _A,
       (("Handcrafted Kolhapuri Chappals", 0),), ("br-padukaa",)),
    _P("Sneaker drop 👟 chunky white sneakers for everyday fits #sneakerhead #ootd",
       "sneakerhead ootd streetstyle", "sneakers,streetwear", _U, "18-24",
       (("Chunky White Sneakers", 1),)),
    _P("Block heels that don't kill your feet after a 6-hour sangeet 💃 #blockheels "
       "#comfortfirst", "blockheels comfortfirst", "footwear,wedding", _F, "25-34",
       (("Block Heel Sandals", 2), ("Quilted Clutch", 0)), (), 1),
    _P("Monsoon-ready 🌧️ waterproof slides, no more soggy shoes #monsoonfashion",
       "monsoonfashion", "monsoon,footwear", _U, _A, (("Waterproof Slides", 0),)),
    _P("Oxidised silver jhumkas are my whole personality 🥹 #jhumkalove #oxidisedjewellery "
       "@zevarandco", "jhumkalove oxidisedjewellery", "jewellery,ethnic", _F, _A,
       (("Oxidised Silver Jhumkas", 2), ("Oxidised Statement Ring", 0)), ("br-zevar",)),
    _P("Layering gold-plated chains for a minimal look ✨ #minimaljewellery #layerednecklace",
       "minimaljewellery layerednecklace", "jewellery,minimal", _F, "18-24",
       (("Layered Gold-Plated Chain", 1), ("Rosé Gold Hoops 💫", 0))),
    _P("Temple jewellery for the big day 👑 #templejewellery #bridallook",
       "templejewellery bridallook", "bridal,jewellery,wedding", _F, "25-34",
       (("Temple Jewellery Necklace Set", 0), ("Kundan Maang Tikka", 0)), ("br-zevar",), 1),
    _P("Everyday hoops 🌙 anti-tarnish and they don't irritate my ears #hoops #everydayjewellery",
       "hoops everydayjewellery", "jewellery", _F, "18-24", (("Rosé Gold Hoops 💫", 1),)),
    _P("Plant protein smoothie 🥤🍌 30g protein and no bloating #plantprotein #fitnessjourney",
       "plantprotein fitnessjourney", "fitness,nutrition,vegan", _U, _A,
       (("Plant Protein Powder", 1),), ("br-fuelfit",)),
    _P("Hydration hack for summer runs 💧 electrolyte fizz in my bottle #hydration #electrolytes",
       "hydration electrolytes", "running,hydration", _U, _A,
       (("Electrolyte Fizz Tablets", 0), ("Steel Shaker Bottle", 0))),
    _P("My daily stack 💊 multivitamin + omega 3 + biotin gummies #wellness #dailyvitamins",
       "wellness dailyvitamins", "wellness,health", _F, "25-34",
       (("Daily Multivitamin", 1), ("Omega 3 Fish Oil", 0), ("Biotin Hair Gummies", 0)), (), 2),
    _P("Post-workout recovery 🧊 whey isolate, chocolate obviously #whey #gains",
       "whey gains", "gym,protein", _M, _A,
       (("Whey Isolate", 0), ("BCAA Recovery", 0)), ("br-fuelfit",)),
    _P("A laptop tote that actually fits a 15\" laptop 💼 #workbag #totebag @totebird",
       "workbag totebag", "work,bags", _F, "25-34", (("Laptop Tote", 0),), ("br-totebird",)),
    _P("Weekend getaway packed in one duffle 🧳 #weekendgetaway #travelbag",
       "weekendgetaway travelbag", "travel,bags", _U, _A, (("Weekender Duffle Bag", 0),)),
    _P("Tiny sling for concert nights 🎶 #slingbag #concertoutfit",
       "slingbag concertoutfit", "concert,bags,party", _F, "18-24",
       (("Mini Sling Bag", 0), ("Rosé Gold Hoops 💫", 1)), (), 1),
    _P("Jute tote for the farmers' market 🌿 #sustainablefashion #jutebag",
       "sustainablefashion jutebag", "sustainable,bags", _F, _A, (("Jute Market Tote", 0),)),
    _P("Hair fall was real 😩 onion + rosemary oil for 6 weeks, results 👇 #hairfallcontrol "
       "#hairgrowth @tresse.hair", "hairfallcontrol hairgrowth tresse", "hair care,hair fall",
       _F, _A, (("Onion & Rosemary Hair Oil", 0),), ("br-tresse",)),
    _P("Frizz-free curls in humid Mumbai 🌀 curl cream + leave-in #curlyhair #curlygirlmethod",
       "curlyhair curlygirlmethod", "curly hair,hair care", _F, "18-24",
       (("Curl Defining Cream", 0), ("Leave-In Conditioner", 0), ("Wide-Tooth Neem Comb", 0))),
    _P("Sulphate-free shampoo & conditioner duo 🚿 #haircareroutine",
       "haircareroutine", "hair care", _U, _A,
       (("Sulphate-Free Shampoo", 0), ("Silk Protein Conditioner", 0)), ("br-tresse",), 1),
    _P("Keratin-smooth at home ✨ hair mask Sunday #hairmask #smoothhair",
       "hairmask smoothhair", "hair care,self care", _F, "25-34",
       (("Tressé Argan Hair Mask", 0),)),
    _P("Airport look ✈️ joggers, sneakers & my fav duffle #airportlook #travelootd",
       "airportlook travelootd", "travel,fashion", _U, _A,
       (("Tapered Joggers", 1), ("Chunky White Sneakers", 0), ("Weekender Duffle Bag", 1))),
    _P("Get ready with me for Diwali 🪔 kurta, jhumkas & kolhapuris #grwm #diwalilook",
       "grwm diwalilook", "festive,ethnic wear,jewellery", _F, _A,
       (("Chanderi Kurta Set", 1), ("Oxidised Silver Jhumkas", 0),
        ("Handcrafted Kolhapuri Chappals", 1))),
    # Untagged posts: the demo's "new uploads" with no known answer.
    _P("Sunday reset 🧖‍♀️ face mist, a sheet mask and hair oil #selfcare #sundayreset",
       "selfcare sundayreset", "self care", _F, _A, ()),
    _P("What's in my gym bag? 🎒 #whatsinmybag #gymlife", "whatsinmybag gymlife", "gym", _U, _A,
       ()),
    _P("Wedding guest in a saree with temple jewellery 🥻👑 #weddingguest", "weddingguest",
       "wedding,ethnic wear", _F, "25-34", ()),
)


def _post_id(i: int) -> str:
    return f"c{0x100 + 5 * i:03x}"


@lru_cache(maxsize=1)
def _pebbles() -> tuple[tuple[PebbleUploaded, tuple[str, ...]], ...]:
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    out = []
    for i, post in enumerate(_POSTS):
        tags = tuple(dict.fromkeys(_pick(base, v) for base, v in post.tags))
        pebble = PebbleUploaded(
            id=_post_id(i),
            type="pebble",
            media_type="video",
            influencer_ids=[f"inf-{i % 9:02d}"],
            brand_ids=list(post.brands),
            label=Label(interests=post.interests.split(","), age_groups=post.ages.split(","),
                        genders=post.genders.split(",")),
            caption=post.caption,
            hashtags=post.hashtags.split(),
            catalog_ids=list(tags[: post.already_tagged]),
            created_at=start + timedelta(hours=7 * i, minutes=13 * i),
        )
        out.append((pebble, tags))
    return tuple(out)


def demo_pebbles() -> list[PebbleUploaded]:
    """About forty posts; some name brands, some already tag a product, a few are untagged."""
    return [pebble for pebble, _ in _pebbles()]


def demo_tags() -> dict[str, list[str]]:
    """Post id → the products tagged on it (all of them, including ``catalog_ids``)."""
    return {pebble.id: list(tags) for pebble, tags in _pebbles() if tags}


# -- files ------------------------------------------------------------------------------
_CSV_COLUMNS = ("id", "name", "keywords", "brand_id", "brand_name", "cat_one", "cat_two",
                "cat_three", "retail_price", "base_price", "status")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return repr(value)  # a Python list literal, as the HYPD exports write keywords
    return str(value)


def _mongo_doc(product: ProductRecord, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": {"$oid": product.id}, "name": product.name}
    doc["brand_id"] = product.brand_id
    doc["brand_name"] = product.brand_name
    doc["keywords"] = list(product.keywords)
    if product.retail_price is not None:
        doc["retail_price"] = {"value": {"$numberDecimal": f"{product.retail_price:.2f}"},
                               "currency": "INR"}
    if product.base_price is not None:
        doc["base_price"] = {"$numberDouble": repr(product.base_price)}
    doc.update(cat_one=product.cat_one, cat_two=product.cat_two, cat_three=product.cat_three)
    if product.status in ("published", "unpublished"):
        doc["status"] = product.status == "published"  # the platform's DB stores a flag
    else:
        doc["status"] = product.status
    created = datetime(2023, 11, 1, tzinfo=UTC) + timedelta(days=n % 200, hours=n % 24)
    doc["created_at"] = {"$date": created.isoformat().replace("+00:00", "Z")}
    doc["updated_at"] = {"$date": {"$numberLong": str(int(created.timestamp() * 1000))}}
    doc["stock"] = {"$numberInt": str(n % 50)}
    return doc


def write_demo_files(out: Path) -> list[Path]:
    """The demo catalog, posts and tags in every format the readers accept; returns the paths.

    products.jsonl, products.csv (HYPD columns plus extras) and products.mongo.json (a
    ``mongoexport --jsonArray`` with ``$oid``/``$date``/``$numberDecimal``) all hold the same
    products; posts.csv and tags.csv are the HYPD content and tag exports.
    """
    out.mkdir(parents=True, exist_ok=True)
    products = demo_products()
    written: list[Path] = []

    path = out / "products.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for product in products:
            handle.write(product.model_dump_json() + "\n")
    written.append(path)

    path = out / "products.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for product in products:
            writer.writerow([_cell(getattr(product, c)) for c in _CSV_COLUMNS])
    written.append(path)

    path = out / "products.mongo.json"
    docs = [_mongo_doc(p, n) for n, p in enumerate(products)]
    path.write_text(json.dumps(docs, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    written.append(path)

    path = out / "posts.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "interests", "hashtags", "caption"))
        for pebble in demo_pebbles():
            # HYPD writes interests and hashtags as space-separated strings, trailing space.
            writer.writerow((pebble.id, " ".join(pebble.label.interests) + " ",
                             " ".join(pebble.hashtags) + " ", pebble.caption + "\n"))
    written.append(path)

    path = out / "tags.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("content_id", "product_ids", "lengths"))
        for post_id, product_ids in demo_tags().items():
            writer.writerow((post_id, repr(product_ids), len(product_ids)))
    written.append(path)
    return written


# -- malformed events -------------------------------------------------------------------
def _event(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


def malformed_events() -> list[tuple[bytes, str]]:
    """Bad pebble events, each with the ``error_type`` a worker should dead-letter it under.

    The checks are assumed in this order: size over 64 KiB → ``too_large``; bytes that are
    not UTF-8 → ``not_utf8``; text that does not parse as JSON (including nesting too deep
    for the parser) → ``not_json``; an object whose ``schema_version`` is not a known
    version → ``unknown_version``; anything else PebbleUploaded refuses (missing id, wrong
    types, no text, limits exceeded, JSON that is not an object) → ``invalid``.
    """
    ok = "Summer glow serum #summerglowup"
    big_caption = "glow " * 14_000  # ~70 KB of otherwise valid JSON
    events: list[tuple[bytes, str]] = [
        # not JSON
        (b'{"id": "m-01", "caption": "unterminated', "not_json"),
        (b"", "not_json"),
        (b"   \n", "not_json"),
        (b"{'id': 'm-02', 'caption': 'python dict repr'}", "not_json"),
        (b'{"id": "m-03", "caption": "trailing comma",}', "not_json"),
        (b"<xml><id>m-04</id></xml>", "not_json"),
        (b"[" * 30_000 + b"]" * 30_000, "not_json"),  # valid JSON, too deep for the parser
        # not UTF-8
        (b'{"id": "m-05", "caption": "caf\xe9 latte"}', "not_utf8"),  # Latin-1 é
        (b'{"id": "m-06", "caption": "\xff\xfe\xfd"}', "not_utf8"),
        (b'\xff\xfe{\x00"\x00i\x00d\x00"\x00', "not_utf8"),  # UTF-16 with a BOM
        # too large (checked before anything else)
        (_event(id="m-07", caption=big_caption), "too_large"),
        (b"\xff" * (65 * 1024), "too_large"),
        # unknown schema version
        (_event(schema_version=2, id="m-08", caption=ok), "unknown_version"),
        (_event(schema_version=99, id="m-09", caption=ok), "unknown_version"),
        (_event(schema_version="v1", id="m-10", caption=ok), "unknown_version"),
        (_event(schema_version=None, id="m-11", caption=ok), "unknown_version"),
        # invalid: missing or bad id
        (_event(caption=ok), "invalid"),
        (_event(id="", caption=ok), "invalid"),
        (_event(id="   ", caption=ok), "invalid"),
        (_event(id=12345, caption=ok), "invalid"),
        (_event(id="x" * 129, caption=ok), "invalid"),
        # invalid: nothing to match on
        (_event(id="m-12"), "invalid"),
        (_event(id="m-13", caption="   \n\t ", hashtags=[], label={"interests": []}), "invalid"),
        # invalid: wrong types and nested junk
        (_event(id="m-14", caption=["not", "a", "string"]), "invalid"),
        (_event(id="m-15", caption=ok, hashtags=[{"tag": "glow"}]), "invalid"),
        (_event(id="m-16", caption=ok, label={"interests": [[["deep", ["er"]]]]}), "invalid"),
        (_event(id="m-17", caption=ok, label="skincare"), "invalid"),
        (_event(id="m-18", caption=ok, created_at="last tuesday"), "invalid"),
        (_event(id="m-19", caption=ok, catalog_ids="3a00"), "invalid"),
        (_event(id="m-20", caption={"text": {"nested": {"junk": [1, 2, {"x": None}]}}}),
         "invalid"),
        (b'["m-21", "a JSON array, not an object"]', "invalid"),
        (b'"just a string"', "invalid"),
        (b"null", "invalid"),
        (b"42", "invalid"),
        # invalid: hostile sizes under the byte limit
        (_event(id="m-22", caption=ok, hashtags=[f"tag{i}" for i in range(500)]), "invalid"),
        (_event(id="m-23", caption=ok, hashtags=" ".join(f"#t{i}" for i in range(200))),
         "invalid"),
        (_event(id="m-24", caption=ok, hashtags=["glow" * 40]), "invalid"),
        (_event(id="m-25", caption="🔥" * 9000), "invalid"),
        (_event(id="m-26", caption=ok, label={"interests": ["beauty"] * 65}), "invalid"),
        (_event(id="m-27", caption=ok, catalog_ids=[f"p{i}" for i in range(300)]), "invalid"),
    ]
    return events


# -- publishing and the end-to-end demo (``keyblend publish-demo`` / ``make run``) ------------
_MALFORMED_ORDER = ("invalid", "not_json", "not_utf8", "unknown_version", "too_large")


def _malformed_sample(n: int) -> list[tuple[bytes, str]]:
    """``n`` malformed events, one of each error type before any repeats (a field-level
    ``invalid`` first: its dead letter names the field, the most instructive one to show)."""
    by_type: dict[str, list[tuple[bytes, str]]] = {t: [] for t in _MALFORMED_ORDER}
    for value, error_type in malformed_events():
        by_type.setdefault(error_type, []).append((value, error_type))
    interleaved = [e for group in itertools.zip_longest(*by_type.values()) for e in group if e]
    return list(itertools.islice(itertools.cycle(interleaved), n)) if n > 0 else []


def publish_demo(settings: Settings, limit: int | None = None, malformed: int = 0) -> int:
    """Publish the demo pebbles (the first ``limit``) keyed by id, plus ``malformed`` bad
    events, to ``settings.topics.pebbles``; waits for every ack and returns how many."""
    from confluent_kafka import KafkaError, Message, Producer

    from consumer.worker import client_overrides

    producer = Producer({"bootstrap.servers": settings.brokers, "enable.idempotence": True,
                         "linger.ms": 5, **client_overrides(settings, "producer")})
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    pebbles = demo_pebbles()[:limit] if limit is not None else demo_pebbles()
    messages = [(p.id.encode(), p.model_dump_json(exclude_none=True).encode()) for p in pebbles]
    messages += [(f"malformed-{i}".encode(), value)
                 for i, (value, _) in enumerate(_malformed_sample(malformed))]
    for key, value in messages:
        producer.produce(settings.topics.pebbles, value, key, on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(30) or failures:
        raise RuntimeError(f"demo events not acknowledged: {failures[:3]}")
    return len(messages)


def _read_back(settings: Settings, suggestions: int, dead_letters: int,
               timeout: float) -> tuple[list[ProductSuggestions], list[RejectedEvent]]:
    """Read the output and dead-letter topics from the beginning until the counts arrive."""
    import time
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from consumer.worker import client_overrides

    topics = settings.topics
    consumer = Consumer({"bootstrap.servers": settings.brokers,
                         **client_overrides(settings, "consumer"),
                         "group.id": f"keyblend-demo-reader-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                         for t in (topics.suggestions, topics.dead_letters)
                         for p in metadata.topics[t].partitions])
        answers: dict[str, ProductSuggestions] = {}  # by idempotency key: duplicates collapse
        letters: list[RejectedEvent] = []
        deadline = time.monotonic() + timeout
        while (len(answers) < suggestions or len(letters) < dead_letters) and (
                time.monotonic() < deadline):
            for message in consumer.consume(100, 0.2):
                if message.error() is not None or message.value() is None:
                    continue
                if message.topic() == topics.suggestions:
                    answer = ProductSuggestions.model_validate_json(message.value() or b"")
                    answers[answer.idempotency_key] = answer
                else:
                    letters.append(RejectedEvent.model_validate_json(message.value() or b""))
        return list(answers.values()), letters
    finally:
        consumer.close()


def _print_answer(pebble: PebbleUploaded | None, answer: ProductSuggestions, top: int) -> None:
    full = " ".join((pebble.caption if pebble else "").split())
    caption = full if len(full) <= 90 else full[:87] + "..."
    # Hashtags the caption already shows are not repeated.
    extra = [h for h in (pebble.hashtags if pebble else []) if f"#{h}".lower() not in full.lower()]
    tags = " ".join(f"#{h}" for h in dict.fromkeys(extra))
    print(f"\n▶ pebble {answer.pebble_id}: {caption} {tags}".rstrip())
    for item in answer.suggestions[:top]:
        why = "; ".join(r.text for r in item.reasons[:2])
        print(f"   {item.rank}. {item.name}  [{item.product_id}]  score {item.score:.4f}"
              + (f"\n      why: {why}" if why else ""))
    if not answer.suggestions:
        print("   (no published product matched)")


def run_demo(settings: Settings, count: int = 8) -> int:
    """``make run``: a local broker, the worker in a thread on the demo catalog and the base
    model, ``count`` demo pebbles and one malformed event in; suggestions printed; all stopped.

    Works offline; after the one-time base model export it takes seconds."""
    import logging
    import threading
    import time
    from typing import cast

    from consumer.local_broker import LocalBroker, fast_test_client_config
    from consumer.worker import Worker, load_engine

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    count = max(1, min(count, len(demo_pebbles())))
    print("Starting a local Kafka-compatible broker (tansu, in memory)...")
    with LocalBroker() as broker:
        # A throwaway local broker: the quick-join settings are right for it, whatever the env.
        overrides = cast(dict[str, str | int | float | bool], fast_test_client_config())
        settings = settings.model_copy(update={
            "brokers": broker.bootstrap, "group": "keyblend-demo", "metrics_port": 0,
            "client_config": {**overrides, **settings.client_config},
        })
        topics = settings.topics
        broker.create_topics([topics.pebbles], partitions=3)
        broker.create_topics([topics.suggestions, topics.dead_letters, topics.control])
        broker.create_topics([topics.products], config={"cleanup.policy": "compact"})
        print("Loading the model (the base model is exported to ONNX once, on first use)...")
        engine = load_engine(settings)
        print(f"Model {engine.version}, {len(engine.catalog)} products in the demo catalog.")
        worker = Worker(settings, engine, worker_id="demo")
        stop = threading.Event()
        failed: list[BaseException] = []

        def work() -> None:
            try:
                worker.run(stop)
            except BaseException as exc:  # reported below; the demo must not hang on it
                failed.append(exc)

        thread = threading.Thread(target=work, name="keyblend-worker", daemon=True)
        thread.start()
        sent = publish_demo(settings, limit=count, malformed=1)
        print(f"Published {sent - 1} demo pebbles and 1 malformed event to {topics.pebbles}.")
        answers, letters = _read_back(settings, count, 1, timeout=45.0)
        stop.set()
        thread.join(timeout=30)
    pebbles = {p.id: p for p in demo_pebbles()}
    for answer in sorted(answers, key=lambda a: a.pebble_id):
        _print_answer(pebbles.get(answer.pebble_id), answer, top=3)
    for letter in letters:
        print(f"\n✖ dead letter (offset {letter.offset}): {letter.error_type}"
              + (f" in field '{letter.field}'" if letter.field else "") + f": {letter.reason}")
    if answers:
        print(f"\nmodel {answers[0].model_version}, catalog {answers[0].catalog_version}")
    print(f"{len(answers)}/{count} pebbles answered, {len(letters)} dead letter(s), "
          f"{time.monotonic() - started:.1f} s in all.")
    if failed:
        print(f"worker failed: {failed[0]!r}")
    return 0 if len(answers) == count and len(letters) == 1 and not failed else 1
