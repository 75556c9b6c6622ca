"""Tagged history: reading posts and tags exports, joining, seeded splits, persistence."""

from __future__ import annotations

from pathlib import Path

from consumer.history import History, TaggedPost, history_manifest, read_posts, read_tags
from schemas.events import PebbleUploaded


def _post(pid: str, caption: str = "glow") -> PebbleUploaded:
    return PebbleUploaded(id=pid, caption=caption)


def test_read_posts_hypd_csv(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text(
        "id,interests,hashtags,caption\n"
        "b6fa,work out activewear gym ,kicaactive workout gymwear ,"
        '"She\'s anything but\nordinary."\n'
        ",no id,tag,caption\n"
        "b700,  ,,\n"  # nothing to match on
        "b701,,#one #two,\n"
        f"b702,,,{'x' * 9000}\n",
        encoding="utf-8",
    )
    posts, report = read_posts(path)
    assert [p.id for p in posts] == ["b6fa", "b701"]
    first = posts[0]
    assert first.label.interests == ["work out activewear gym"]
    assert first.hashtags == ["kicaactive", "workout", "gymwear"]
    assert first.caption == "She's anything but\nordinary."
    assert posts[1].hashtags == ["one", "two"]
    assert [(e.line, e.field) for e in report.errors] == [(4, "id"), (5, None), (7, "caption")]
    assert "nothing to match" in report.errors[1].message


def test_read_posts_jsonl_with_mongo_ids(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(
        '{"_id": {"$oid": "m1"}, "caption": "hi",'
        ' "created_at": {"$date": "2024-01-01T00:00:00Z"}}\n'
        '{"id": "m2", "interests": ["a", " ", "b"], "caption": ""}\n'
        '{"id": "m3", "caption": 5}\n',
        encoding="utf-8",
    )
    posts, report = read_posts(path)
    assert [p.id for p in posts] == ["m1", "m2"]
    assert posts[0].created_at is not None and posts[0].created_at.year == 2024
    assert posts[1].label.interests == ["a", "b"]
    assert [(e.line, e.field) for e in report.errors] == [(3, "caption")]


def test_read_tags_parses_lists_and_names_bad_fields(tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    path.write_text(
        "content_id,product_ids,lengths\n"
        "b698,['4505'],1\n"
        "b6dc,\"['fc9b', 'fbed', 'fc9b']\",3\n"
        ",['x'],1\n"
        "b6fe,[],0\n"
        "b700,\"['broken\",1\n"
        "b698,\"['4505', '9999']\",2\n",
        encoding="utf-8",
    )
    tags, report = read_tags(path)
    assert tags == {"b698": ["4505", "9999"], "b6dc": ["fc9b", "fbed"]}  # merged, no repeats
    assert [(e.line, e.field) for e in report.errors] == [
        (4, "content_id"), (5, "product_ids"), (6, "product_ids")]
    assert report.loaded == 2 and report.rejected == 3


def test_join_keeps_labelled_unambiguous_posts_in_order() -> None:
    posts = [_post("a"), _post("b"), _post("dup"), _post("dup", "again"), _post("c")]
    history = History.join(posts, {"c": ["p3"], "a": ["p1", "p2"], "dup": ["p9"]})
    assert [(i.post.id, i.tags) for i in history] == [("a", ("p1", "p2")), ("c", ("p3",))]
    assert [p.id for p in history.posts] == ["a", "c"]


def test_split_is_seeded_disjoint_and_complete() -> None:
    history = History(TaggedPost(_post(f"p{i}"), (f"x{i}",)) for i in range(50))
    rest, held = history.split(0.2, seed=7)
    assert len(held) == 10 and len(rest) == 40
    ids_rest, ids_held = {p.id for p in rest.posts}, {p.id for p in held.posts}
    assert ids_rest.isdisjoint(ids_held) and len(ids_rest | ids_held) == 50
    _, again_held = history.split(0.2, seed=7)
    assert [p.id for p in again_held.posts] == [p.id for p in held.posts]
    _, other = history.split(0.2, seed=8)
    assert {p.id for p in other.posts} != ids_held
    # Both parts keep the original order.
    assert [p.id for p in rest.posts] == sorted(ids_rest, key=lambda s: int(s[1:]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    post = PebbleUploaded.model_validate({
        "id": "p1", "caption": "Glow ✨ “quotes”", "hashtags": ["glow"],
        "label": {"interests": ["skincare"]}, "catalog_ids": ["a"],
        "created_at": "2024-03-01T09:00:00+00:00"})
    history = History([TaggedPost(post, ("a", "b")), TaggedPost(_post("p2"), ("c",))])
    history.save(tmp_path / "deep" / "history.jsonl")
    loaded = History.load(tmp_path / "deep" / "history.jsonl")
    assert [(i.post, i.tags) for i in loaded] == [(i.post, i.tags) for i in history]
    manifest = history_manifest(loaded)
    assert manifest["posts"] == 2 and manifest["tags"] == 3


def test_from_files_reports_both_readers(tmp_path: Path) -> None:
    (tmp_path / "posts.csv").write_text("id,interests,hashtags,caption\na,,,hello\nb,,,bye\n",
                                        encoding="utf-8")
    (tmp_path / "tags.csv").write_text("content_id,product_ids\nb,['x']\nzzz,['y']\n",
                                       encoding="utf-8")
    history, reports = History.from_files(tmp_path / "posts.csv", tmp_path / "tags.csv")
    assert [(i.post.id, i.tags) for i in history] == [("b", ("x",))]
    assert [r.loaded for r in reports] == [2, 2]
