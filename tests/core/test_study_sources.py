"""Study sources (issue 13 item 1): the SourceRef value, slices named by UIDs (SliceKey), the local
study locator on real files (a folder, a zip archive, a pydicom file), and the review store keeping a
source per study, with the v2 -> v3 migration run on a database written by the v2 schema statements."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.core.test_review_store import make_prediction
from tests.factories import write_ct_series
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceKey, Stack
from viewer.core.errors import StudySourceError
from viewer.core.location import (
    LocalStudyLocator,
    SourceKind,
    SourceRef,
    StudyLocators,
)
from viewer.core.review import ReviewStore
from viewer.core.review.export import session_document
from viewer.core.review.schema import MIGRATIONS


def _stacks(*paths: Path) -> list[Stack]:
    return load_paths(list(paths)).all_stacks()


# --- SourceRef ------------------------------------------------------------------------------------
def test_source_ref_round_trips_through_its_columns() -> None:
    local = SourceRef.local(["/a/b", Path("/c.zip"), "/a/b"])
    assert local.kind is SourceKind.LOCAL and local.paths == ("/a/b", "/c.zip")  # duplicates once
    web = SourceRef.pacs("main", SourceKind.DICOMWEB, ["1.2.3", "1.2.4"])
    dimse = SourceRef.pacs("backup", SourceKind.DIMSE)
    for ref in (local, web, dimse, SourceRef.local(())):
        assert SourceRef.from_columns(*ref.to_columns()) == ref
    assert web.to_columns() == ("dicomweb", "main", json.dumps({"series_uids": ["1.2.3", "1.2.4"]}))
    assert "main" in web.describe() and "DICOMweb" in web.describe()
    assert local.describe() == "local files (2 paths)" and "/a/b" not in local.describe()


@pytest.mark.parametrize(
    ("kind", "node", "locator", "match"),
    [
        ("ftp", "", "{}", "Unknown study source kind"),
        ("local", "", "[1, 2", "not JSON"),
        ("local", "", "[]", "not a JSON object"),
        ("local", "", '{"paths": [1]}', "not a list of texts"),
        ("dicomweb", "", "{}", "needs the PACS node's name"),
        ("dimse", "n", '{"series_uids": "1.2"}', "not a list of texts"),
    ],
)
def test_malformed_source_columns_are_refused_with_the_reason(
    kind: str, node: str, locator: str, match: str
) -> None:
    with pytest.raises(StudySourceError, match=match):
        SourceRef.from_columns(kind, node, locator)


def test_sources_merge_within_one_source_and_are_replaced_by_another() -> None:
    a = SourceRef.local(["/x"])
    assert a.merged(SourceRef.local(["/y", "/x"])).paths == ("/x", "/y")
    assert a.merged(SourceRef.local(())) == a  # nothing new: kept
    web = SourceRef.pacs("main", SourceKind.DICOMWEB, ["1"])
    assert web.merged(SourceRef.pacs("main", SourceKind.DICOMWEB, ["2"])).series_uids == ("1", "2")
    assert web.merged(SourceRef.pacs("main", SourceKind.DICOMWEB)).series_uids == ()  # whole study
    assert a.merged(web) == web and web.merged(a) == a  # opened from elsewhere: that is where it is now
    with pytest.raises(StudySourceError):
        SourceRef(SourceKind.LOCAL, node="main")
    with pytest.raises(StudySourceError):
        SourceRef.pacs("main", SourceKind.LOCAL)


# --- SliceKey -------------------------------------------------------------------------------------
def test_slice_keys_name_each_frame_by_uids_whatever_the_path(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "a", 6, seed=3)
    (stack,) = _stacks(tmp_path / "a")
    keys = [stack.slice_key(k) for k in range(len(stack))]
    assert len(set(keys)) == 6
    assert {k.sop_instance_uid for k in keys} == {str(dcmread(f).SOPInstanceUID) for f in files}
    assert all(
        k.study_uid == stack.study_instance_uid and k.series_uid == stack.series_instance_uid for k in keys
    )
    # the same images from a zip archive (other paths, another order of discovery): the same keys
    archive = tmp_path / "copy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in reversed(files):
            zf.write(f, f"x/{f.name}")
    (zipped,) = _stacks(archive)
    assert zipped.slices[0].source.member is not None
    assert [zipped.slice_key(k) for k in range(len(zipped))] == keys
    assert all(zipped.index_of(key) == k for k, key in enumerate(keys))
    assert stack.index_of(SliceKey(stack.study_instance_uid, "other", keys[0].sop_instance_uid)) is None


def test_slice_keys_of_a_multi_frame_object_differ_by_frame() -> None:
    path = Path(str(get_testdata_file("emri_small.dcm")))
    (stack,) = _stacks(path)
    n = int(dcmread(path, stop_before_pixels=True).NumberOfFrames)
    keys = [stack.slice_key(k) for k in range(len(stack))]
    assert len(stack) == n > 1 and len({k.sop_instance_uid for k in keys}) == 1
    assert sorted(k.frame for k in keys) == list(range(n))
    assert all(stack.index_of(key) == k for k, key in enumerate(keys))


# --- the local locator ----------------------------------------------------------------------------
def test_local_locator_resolves_the_files_still_there(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 4, seed=1)
    uid = _stacks(tmp_path / "a")[0].study_instance_uid
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (tmp_path / "a").iterdir():
            zf.write(f, f.name)
    gone = tmp_path / "moved-away"
    source = SourceRef.local([tmp_path / "a", archive, gone])
    progress: list[tuple[int, int]] = []
    located = LocalStudyLocator().locate(uid, source, progress=lambda d, t: progress.append((d, t)))
    assert located.paths == (tmp_path / "a", archive) and located.source == source
    assert not located.complete and located.problems == (f"{gone}: no longer exists",)
    assert progress == [(3, 3)]
    stacks = _stacks(*located.paths)
    assert {s.study_instance_uid for s in stacks} == {uid}

    with pytest.raises(StudySourceError, match="no longer exist"):
        LocalStudyLocator().locate(uid, SourceRef.local([gone]))
    with pytest.raises(StudySourceError, match="No files are recorded"):
        LocalStudyLocator().locate(uid, SourceRef.local(()))
    # a PACS source needs a PACS locator: the router says so instead of guessing
    router = StudyLocators({SourceKind.LOCAL: LocalStudyLocator()})
    assert router.locate(uid, SourceRef.local([archive])).paths == (archive,)
    with pytest.raises(StudySourceError, match="DICOMweb cannot be opened again here"):
        router.locate(uid, SourceRef.pacs("main", SourceKind.DICOMWEB))


# --- the review store -----------------------------------------------------------------------------
def test_review_store_keeps_a_source_per_study_and_merges_it(tmp_path: Path) -> None:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    session = store.create_session("Sources")
    session.add_study("1.1", ["/data/a"])
    session.add_study("1.1", ["/data/b"])
    assert session.study("1.1").source == SourceRef.local(["/data/a", "/data/b"])
    web = SourceRef.pacs("main", SourceKind.DICOMWEB, ["1.1.5"])
    session.record_ai_result(make_prediction("1.2"), source=web)
    assert session.study("1.2").source == web and session.study("1.2").paths == ()
    # the reader retrieves study 1.1 from the PACS: that is its source now; its old paths stay listed
    session.add_study("1.1", source=SourceRef.pacs("main", SourceKind.DIMSE))
    study = session.study("1.1")
    assert study.source == SourceRef.pacs("main", SourceKind.DIMSE) and study.paths == ("/data/a", "/data/b")
    with pytest.raises(ValueError, match="not both"):
        session.add_study("1.3", ["/x"], source=web)
    kinds = [
        json.loads(r[0])["source"]
        for r in store._conn.execute("SELECT payload FROM events WHERE kind = 'add_study' ORDER BY seq")
    ]
    assert kinds == ["local", "local", "dimse"]
    # the JSON export names the kind always, the node and paths only with identifiers
    plain = session_document(session)
    assert [s["source_kind"] for s in plain["studies"]] == ["dimse", "dicomweb"]
    assert "source" not in plain["studies"][1]
    full = session_document(session, include_identifiers=True)
    assert full["studies"][1]["source"] == {"kind": "dicomweb", "node": "main", "series_uids": ["1.1.5"]}
    store.close()


def test_positions_name_the_slice_by_uids(tmp_path: Path) -> None:
    store = ReviewStore.open(tmp_path / "r.sqlite3")
    session = store.create_session("Pos")
    session.add_study("1.1", ["/data/a"])
    key = SliceKey("1.1", "1.1.2", "1.1.2.7", 3)
    session.set_last_position("1.1", "1.1.2#1", 9, key)
    pos = session.last_position()
    assert pos is not None and pos.slice_key == key and pos.slice_index == 9
    session.set_last_position("1.1", "1.1.2", 2)  # without a key (an MPR plane): the index only
    pos = session.last_position()
    assert pos is not None and pos.slice_key is None and pos.slice_index == 2
    store.close()


def _v2_database(db: Path, study_paths: dict[str, list[str]]) -> None:
    """A database as the v2 code wrote it: its own schema statements (MIGRATIONS[0] and [1] are
    released steps, never edited), then rows as its store wrote them."""
    conn = sqlite3.connect(db)
    for version in (1, 2):
        for statement in MIGRATIONS[version - 1]:
            assert isinstance(statement, str)
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version VALUES (?, '2026-01-01T00:00:00+00:00', '0.4.0')", (version,)
        )
    conn.execute("INSERT INTO sessions VALUES ('s1', 'Old batch', 'R', '2026-01-01', '2026-01-02')")
    for k, (uid, paths) in enumerate(study_paths.items()):
        conn.execute(
            "INSERT INTO studies (id, session_id, study_uid, position, paths, note, done, added_at,"
            " updated_at) VALUES (?, 's1', ?, ?, ?, 'a note', ?, '2026-01-01', '2026-01-01')",
            (k + 1, uid, k, json.dumps(paths), k % 2),
        )
    conn.execute(
        "INSERT INTO findings (study_id, source, class_name, ranges, decision, decision_at, corrected_class,"
        " created_at, updated_at) VALUES (1, 'reader', 'subdural', '[[3, 4]]', 'confirmed', '2026-01-01',"
        " 'epidural', '2026-01-01', '2026-01-01')"
    )
    first = next(iter(study_paths))
    conn.execute("INSERT INTO positions VALUES ('s1', ?, ?, 3, '2026-01-02')", (first, first + ".9"))
    conn.execute(
        "INSERT INTO events (ts, session_id, study_uid, kind, payload) VALUES "
        "('2026-01-01', 's1', ?, 'add_study', '{\"n_paths\": 1}')",
        (first,),
    )
    conn.execute("INSERT INTO meta VALUES ('last_session', 's1', '2026-01-02')")
    conn.commit()
    conn.close()


def _rows(conn: sqlite3.Connection, table: str, columns: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()


def test_migration_from_v2_turns_paths_into_local_sources_and_loses_nothing(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "a", 5, seed=4)
    write_ct_series(tmp_path / "b", 3, seed=5)
    uid_a = _stacks(tmp_path / "a")[0].study_instance_uid
    uid_b = _stacks(tmp_path / "b")[0].study_instance_uid
    studies = {
        uid_a: [str(tmp_path / "a")],
        uid_b: [str(tmp_path / "b"), str(tmp_path / "gone.zip")],
        "9.9.9": [],
    }
    db = tmp_path / "review" / "r.sqlite3"
    db.parent.mkdir()
    _v2_database(db, studies)
    before = sqlite3.connect(db)
    old = {
        t: _rows(before, t, c)
        for t, c in (
            ("sessions", "*"),
            ("studies", "*"),
            ("findings", "*"),
            ("positions", "*"),
            ("events", "*"),
            ("meta", "*"),
        )
    }
    before.close()

    store = ReviewStore.open(db)
    assert store.schema_version == 3 and store.migrated_from == 2
    assert store.backup_path == db.with_name("r.sqlite3.v2.bak")
    bak = sqlite3.connect(store.backup_path)
    assert bak.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
    assert _rows(bak, "studies", "*") == old["studies"]
    bak.close()
    # every old row and value is still there (the new columns come after the old ones)
    conn = store._conn
    for table, rows in old.items():
        width = len(rows[0]) if rows else 0
        now = [r[:width] for r in _rows(conn, table, "*")]
        if table == "meta":  # the store adds its own id and change counter
            now = [r for r in now if r[0] not in ("store_id", "change_seq")]
        assert now == rows, table

    session = store.open_session("s1")
    assert store.last_session_id() == "s1"
    a, b, empty = session.studies()
    assert a.source == SourceRef.local([str(tmp_path / "a")]) and a.paths == (str(tmp_path / "a"),)
    assert b.source.paths == (str(tmp_path / "b"), str(tmp_path / "gone.zip"))
    assert empty.source == SourceRef.local(()) and empty.source.is_empty
    assert a.note == "a note" and b.done and a.finding(a.findings[0].id).corrected_class == "epidural"
    pos = session.last_position()
    assert pos is not None and (pos.study_uid, pos.stack_uid, pos.slice_index) == (uid_a, uid_a + ".9", 3)
    assert pos.slice_key is None
    # reopening works from the migrated rows: the locator finds the files, the loader opens the study
    for study, n in ((a, 5), (b, 3)):
        located = LocalStudyLocator().locate(study.study_uid, study.source)
        (stack,) = _stacks(*located.paths)
        assert stack.study_instance_uid == study.study_uid and len(stack) == n
    assert LocalStudyLocator().locate(uid_b, b.source).problems == (
        f"{tmp_path / 'gone.zip'}: no longer exists",
    )
    # new writes use the new columns; the session goes on
    session.add_study(uid_a, source=SourceRef.pacs("main", SourceKind.DICOMWEB))
    session.set_last_position(uid_b, uid_b, 1, SliceKey(uid_b, "s", "i", 0))
    store.close()
    again = ReviewStore.open(db)
    assert again.migrated_from is None
    session = again.open_session("s1")
    assert session.study(uid_a).source.is_pacs and session.study(uid_a).paths == (str(tmp_path / "a"),)
    pos = session.last_position()
    assert pos is not None and pos.slice_key == SliceKey(uid_b, "s", "i", 0)
    again.close()
