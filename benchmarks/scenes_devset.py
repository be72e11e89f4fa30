"""A labelled dev set of everyday scene photos (landscapes, water, cities, buildings, interiors,
plants, people), read from registry packages, as a benchmark for scene tags (not used by CI yet).

    apt-get install mate-backgrounds tuxpaint-data gcompris-qt-data opencv-doc
    .venv/bin/python benchmarks/scenes_devset.py [--out DIR]   # default ~/.cache/image_tag_suggestion/scenes

Nothing is downloaded but from the package registries. The versions are those the labels were
made on. Installed Debian packages and the project's PyPI packages are read where they are:

=================  =========================  ===========  =================================  ======
source key         package                    version      licence (debian/copyright)         photos
=================  =========================  ===========  =================================  ======
``mate:``          Debian mate-backgrounds    1.26.0-1     GPL-2+ (the ``nature/`` photos)     12
``tuxpaint:``      Debian tuxpaint-data       1:0.9.28-    GPL-2+ (``templates/`` photos)      19
                                              sdl2-1
``gcompris:``      Debian gcompris-qt-data    3.1-2        CC-BY-SA / CC-BY / public domain    25
                                                           (per file, see its copyright)
``opencv:``        Debian opencv-doc          4.6.0        BSD-3-Clause / Apache-2.0 (per     17
                                              +dfsg-12     file)
``skimage:``       PyPI scikit-image          0.26.0       BSD-3-Clause (data: see its         2
                                                           ``skimage/data/README.txt``)
=================  =========================  ===========  =================================  ======

(``tuxpaint-data`` pulls in ``tuxpaint-stamps-default``, which the object dev set needs anyway.)

The other Debian packages are never installed (several would pull in hundreds of packages for a
few photos): the build fetches each one once with ``apt-get download PACKAGE=VERSION`` (no root
needed) into ``~/.cache/image_tag_suggestion/debs/``, refuses it unless its sha256 is the one in
:data:`DEBIAN_ARCHIVES`, and unpacks only the folder that holds the photos (with ``dpkg-deb``).
About 1540 MB are fetched the first time (``texlive-latex-extra-doc`` alone is 593 MB, for 32 photos, and
``castle-game-engine-doc`` 257 MB, for 7); only the image files (:data:`IMAGE_SUFFIXES`) are unpacked:

================  ========================================  ====================  =====  ===============================  ======
source key        Debian package                            version               MB     licence (debian/copyright)       photos
================  ========================================  ====================  =====  ===============================  ======
``scratch:``      scratch                                   1.4.0.6~dfsg1-6.1     25.7   CC-BY-SA-3.0 (``Media/*``)       52
``tuxtype:``      tuxtype-data                              1.8.3-5.1             9.9    GPL-2; its README: Wikimedia     13
                                                                                         Commons featured pictures
``lemonldap:``    liblemonldap-ng-portal-perl               2.16.1+ds-deb12u10    3.1    CC-BY-NC-ND-3.0 or GFDL-1.3       6
                                                                                         (Wikimedia Commons photos)
``gnome_faces:``  gnome-control-center-data                 1:43.6-2~deb12u1      3.6    ``Files: *``: GPL-2+ and others  15
``elementary:``   libelementary-data                        1.26.3-1              22.9   BSD-2-clause                      9
``dlib:``         libdlib19.1                               19.24+dfsg-1          3.7    public domain (``examples/*``;   11
                                                                                         the faces are PASCAL VOC photos)
``labelme:``      labelme-examples                          5.1.1-1               9.7    GPL-3+ (PASCAL VOC photos)        6
``colorbox:``     libjs-jquery-colorbox                     1.6.4-1.1             0.8    MIT                               5
``jqueryui:``     libjs-jquery-ui-docs                      1.13.2+dfsg-1         0.3    CC0 (``demos/*``)                 6
``backstretch:``  libjs-jquery-backstretch                  2.1.17-4              8.5    Expat                             3
``jqslides:``     libjs-jquery-slides                       12-4                  1.0    Apache-2.0 (``slides/*``)         5
``cropper:``      libjs-cropper                             1.2.2-1.1             0.1    BSD                               2
``rmagick:``      ruby-rmagick-doc                          4.2.3-2+deb12u1       1.4    MIT-X                             4
``imaging:``      golang-github-disintegration-imaging-dev  1.6.2-2               2.2    Expat                             1
``renpy:``        renpy-demo                                8.0.3+dfsg-1          26.4   Expat                             4
``lifeograph:``   lifeograph                                2.0.3-1               9.8    GPL-3+                            6
``jxl:``          libjxl-testdata                           0.0~git20230110       55.8   CC0 (``external/wesaturate``),    5
                                                            .d6168ff-1                   BSD-3-clause (the rest)
``gem:``          gem-doc                                   1:0.94-8              3.9    GPL-2+                            2
``gramps:``       gramps                                    5.1.5-1               6.7    GPL-2+ (old portraits)            4
``kodi:``         kodi-data                                 2:20.1+dfsg-1         20.5   CC0 (the two home images)         2
``texlive:``      texlive-publishers                        2022.20230122-4       21.1   LPPL-1.3 (``sduthesis``,         17
                                                                                         ``uantwerpendocs``)
``hugin:``        hugin-data                                2022.0.0+dfsg-2       8.0    GPL-2+ (``Files: *``; help         5
                                                                                         photos)
``tdiary:``       tdiary-theme                              5.2.3-1               3.4    GPL-2.0+                          7
``krank:``        krank                                     0.7+dfsg2-4           58.1   public domain (images by Slava   18
                                                                                         Anishenko; underwater)
``qtquick:``      qtdeclarative5-examples                   5.15.8+dfsg-3         5.2    BSD-3-clause (``examples/*``)     1
``bootstrap:``    libjs-bootstrap5-doc                      5.2.3+dfsg-8          1.1    Expat                             1
``castle:``       castle-game-engine-doc                    7.0~alpha.2+dfsg1-5   256.8  GPL-2+ or LGPL-2+ (``Files: *``)  7
``psychtoolbox:`` psychtoolbox-3-common                     3.0.18.12.dfsg1-1.1   26.2   Expat (``Files: *``)              3
``pixbuf:``       gdk-pixbuf-tests                          2.42.10+dfsg-1        5.7    LGPL-2+ / LGPL-2.1+ / CC0-1.0     1
                                                            +deb12u4
``vigra:``        libvigraimpex-doc                         1.11.1+dfsg-11        5.4    Expat                             1
``tlextra:``      texlive-latex-extra-doc                   2022.20230122-4       593.0  per CTAN package, as its          32
                                                                                         ``texlive-latex-extra``
                                                                                         ``Licenses`` says: LPPL
                                                                                         (``image-gallery``, ``bearwear``,
                                                                                         ``papertex``, ``wallcalendar``,
                                                                                         ``wallpaper``, ``incgraph``,
                                                                                         ``recipebook``,
                                                                                         ``petiteannonce``); LPPL-1.3
                                                                                         and CC-BY-4.0
                                                                                         (``beamerdarkthemes``);
                                                                                         CC-BY-SA-4.0
                                                                                         (``beamertheme-trigon``); GPL
                                                                                         (``beamertheme-detlevcm``)
``tlpictures:``   texlive-pictures-doc                      2022.20230122-3       233.5  LPPL (``hvfloat``, ``xput``,      3
                                                                                         ``circuit-macros``)
``tlscience:``    texlive-science-doc                       2022.20230122-4       83.5   LPPL (``fascicules``)             1
``digikam:``      digikam-data                              4:7.9.0-1             11.0   GPL (its copyright: "almost       1
                                                                                         all software is GPL"; none of
                                                                                         its exceptions is ``about/``)
================  ========================================  ====================  =====  ===============================  ======

``libdlib19.1``, ``lifeograph``, ``qtdeclarative5-examples`` and ``gdk-pixbuf-tests`` are fetched as their amd64 builds (``PACKAGE:amd64``), whose
sha256 is the one recorded. When Debian drops one of these versions (a security update replaces
it), ``apt-get download`` fails: the build then says which package, and the version and sha256
here must be brought up to date (after checking that the labelled photos did not change).

``scenes_labels.csv`` (beside this file, written by hand from looking at every photo) gives:
``photo`` (the stable key ``source:path``), ``kind`` (one of :data:`KINDS`), ``entry`` (the one
word a person would type first), ``tags`` (``;``-separated, every one from :data:`TAGS`: what is
clearly visible; ``black_and_white``, ``night`` and ``sunset_palette`` are photo properties),
``people`` (blank, ``person``: one or two people, ``portrait``: one prominent face, ``group``:
three or more) and ``faces_visible`` (``yes``/``no``, blank without people; ``no`` also where
people are too far away or too small for their faces to be made out). The tags were checked a
second time, photo by photo, by someone who had not seen the model's tags: first for every word
(86 photos changed: words clearly visible but missing added, such as clouds, grass, a room, a
tree; a few removed; 6 photos' people corrected), then for "plant" (any clearly visible
vegetation) and "landscape" (a view of scenery), which before came only from the kind of photo.
Two columns were added later, again by looking at every photo without the model's tags:
``entry_sense`` (the WordNet sense of the entry word that the photo shows, ``dome.n.04`` "a
hemispherical roof" rather than the first sense, a concave shape; ``;`` between senses that
are both true; blank for a word of the scene vocabulary, which has its own sense, and where
WordNet lacks the word) and ``objects`` (WordNet senses of the other things clearly visible and
right to tag that the scene words cannot say: an aircraft, a lab coat, a dog; 279 photos have
some).

The split is the object dev set's (``devset.split_of``): a hash of each photo's key holds out
about 40%. The build writes each photo as a JPEG (long side at most 1600 px) and
``manifest.jsonl`` (one photo a line, with its split and labels) into the output folder. A photo
with a transparent pixel (a cut-out) is refused.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import (GCOMPRIS, OPENCV, OPENCV_HTML, gcompris_photo, package_folder, read_manifest,  # noqa: E402
                    split_of, write_manifest)

from image_tag_suggestion.conversion.wordnet import read_senses, synset_by_key  # noqa: E402


HERE = Path(__file__).resolve().parent
LABELS_CSV = HERE / "scenes_labels.csv"
DEFAULT_OUT = Path.home() / ".cache" / "image_tag_suggestion" / "scenes"
DEB_CACHE = Path.home() / ".cache" / "image_tag_suggestion" / "debs"
MAX_SIDE = 1600

KINDS = ("landscape", "water", "city", "building", "interior", "plant", "people", "object", "other")
PEOPLE = ("", "person", "portrait", "group")
FACES = ("", "yes", "no")
TAGS = (
    "beach", "sea", "coast", "lake", "river", "waterfall", "mountain", "hill", "valley", "forest", "tree",
    "field", "meadow", "garden", "flower", "desert", "snow", "sky", "clouds", "sunset", "sunrise", "night",
    "city", "street", "building", "skyscraper", "bridge", "house", "church", "interior", "room", "road",
    "rock", "sand", "grass", "water", "person", "people", "animal", "boat", "car", "plant", "landscape",
    "black_and_white", "sunset_palette",
)

# source key -> (where it is installed, the package that installs it: Debian, or PyPI for a module)
DEBIAN_SOURCES = {
    "mate": (Path("/usr/share/backgrounds/mate"), "mate-backgrounds"),
    "tuxpaint": (Path("/usr/share/tuxpaint"), "tuxpaint-data"),
    "gcompris": (GCOMPRIS, "gcompris-qt-data"),
    "opencv": (OPENCV.parent, "opencv-doc"),  # .../opencv-doc/examples
}
PYPI_SOURCES = {"skimage": "scikit-image"}

# source key -> (Debian package, version, sha256 of its .deb, the folder inside it that keys start from);
# fetched with `apt-get download`, never installed (see the module's docstring). Four are amd64 builds.
DEBIAN_ARCHIVES = {
    "scratch": ("scratch", "1.4.0.6~dfsg1-6.1",
                "36c582eb93110f64f06c4e685c41e933ccba2fa68db12f79b10bfe840b21fc10",
                "usr/share/scratch/Media/Backgrounds"),
    "tuxtype": ("tuxtype-data", "1.8.3-5.1",
                "62f85e2c6d6820efbaf1d914039b50c070bf5899b1d1d14aea00cebca14f4c78",
                "usr/share/tuxtype/images"),
    "lemonldap": ("liblemonldap-ng-portal-perl", "2.16.1+ds-deb12u10",
                  "15a123c6fb23896f4afda5c124ace6b7045e1f662bc88ea988a2a141fdf26e35",
                  "usr/share/lemonldap-ng/portal/htdocs/static/common/backgrounds"),
    "gnome_faces": ("gnome-control-center-data", "1:43.6-2~deb12u1",
                    "f76430c1f6db2be884bbc0e37cfa43752b49d252abb94d9cce494e8cdd8882a1",
                    "usr/share/pixmaps/faces"),
    "elementary": ("libelementary-data", "1.26.3-1",
                   "03e2fabca2f72a350229465d239f8f288e36584ff3c0e5465f362d9c0008b885",
                   "usr/share/elementary/images"),
    "dlib": ("libdlib19.1:amd64", "19.24+dfsg-1",
             "f03f46681d43701914ddd38eee42f1d34dc1d12e2f125bd1e3b562f23572b4da",
             "usr/share/doc/libdlib19.1/examples"),
    "labelme": ("labelme-examples", "5.1.1-1",
                "acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23",
                "usr/share/doc/labelme-examples/examples"),
    "colorbox": ("libjs-jquery-colorbox", "1.6.4-1.1",
                 "af10fdea285bbb34ecfb6c464855d1b5b645072c57696968d12166facc85c103",
                 "usr/share/doc/libjs-jquery-colorbox/examples/content"),
    "jqueryui": ("libjs-jquery-ui-docs", "1.13.2+dfsg-1",
                 "9582e7be0561b95899f01f618f5d6a0e6742e5a0397d52d1dad5ce04bf680fe4",
                 "usr/share/doc/libjs-jquery-ui-docs/examples"),
    "backstretch": ("libjs-jquery-backstretch", "2.1.17-4",
                    "c9c7f74fddbfde20db58a241df9b0a609991532e289f4b187847124ee26cb60a",
                    "usr/share/doc/libjs-jquery-backstretch/examples"),
    "jqslides": ("libjs-jquery-slides", "12-4",
                 "341d34935e179e556802a39f70b4e0acb5df8591af99406b06bde4309fdcf4f2",
                 "usr/share/doc/libjs-jquery-slides/examples/Linking/img"),
    "cropper": ("libjs-cropper", "1.2.2-1.1",
                "41217e7b75a227b53fe96f37b7974b117e0c85f2a041ef420f259b7cb59abdb2",
                "usr/share/doc/libjs-cropper/tests"),
    "rmagick": ("ruby-rmagick-doc", "4.2.3-2+deb12u1",
                "c26dc676b1f82da4d386f22d466a97f8b2101dfabecf6a7671b8f7bba22c24cc",
                "usr/share/doc/ruby-rmagick-doc/html/ex/images"),
    "imaging": ("golang-github-disintegration-imaging-dev", "1.6.2-2",
                "f7750767c5fe5f78c31730405746adf862f7faf734266ca1086ec52ea2e24b0a",
                "usr/share/gocode/src/github.com/disintegration/imaging/testdata"),
    "renpy": ("renpy-demo", "8.0.3+dfsg-1",
              "b7599368598cd7a96e89772d48d7c89327fcc8d4490e0760eceda0bd792025d5",
              "usr/share/games/renpy/demo/game"),
    "lifeograph": ("lifeograph:amd64", "2.0.3-1",
                   "67297755895aeb818f067c265a2e4b11e2d221c47d4ab42819de98c5902638fe",
                   "usr/share/net.sourceforge.Lifeograph/backgrounds"),
    "jxl": ("libjxl-testdata", "0.0~git20230110.d6168ff-1",
            "a58523413f486760a0f3cbc931142a27e3aa25f77315b862046f089ed34aa2c7",
            "usr/share/libjxl-testdata"),
    "gem": ("gem-doc", "1:0.94-8",
            "6665f1e36e7788e2b7f19323240f8d085e4fd002b3cded324cef5d0a3f654ea0",
            "usr/share/gem/examples"),
    "gramps": ("gramps", "5.1.5-1",
               "77875e0983e97498e91a14b4fd4033998146a582c7932a993cf268929a9fda6b",
               "usr/share/doc/gramps/example/gramps"),
    "kodi": ("kodi-data", "2:20.1+dfsg-1",
             "acecf3740d507edc4e9c943daf6155e24f82be83daf3fe423c54425ae5ff6a76",
             "usr/share/kodi/addons/skin.estuary/extras/home-images"),
    "texlive": ("texlive-publishers", "2022.20230122-4",
                "b58dad3a25c55c9347c51a8b384c47194f2b2e37a5f3dca893d9794396813610",
                "usr/share/texlive/texmf-dist/tex/latex"),
    "hugin": ("hugin-data", "2022.0.0+dfsg-2",
              "0289091920be52eec91bf1ae6739a2dfe6c0075fc187daf3a39f765a8eab22e0",
              "usr/share/hugin/xrc/data/help_en_EN"),
    "tdiary": ("tdiary-theme", "5.2.3-1",
               "6b791f66379ae81cd70a23f9b47bc27c4f0198fe8edebfbf2553c2cef15e8c96",
               "usr/share/tdiary/theme"),
    "krank": ("krank", "0.7+dfsg2-4",
              "9a3d16fe30cef98d18a4ed9049f879339d8840f8cc729136ce2e0c7dbee33042",
              "usr/share/games/krank/levels/unera-backgrounds"),
    "qtquick": ("qtdeclarative5-examples:amd64", "5.15.8+dfsg-3",
                "1602b071cdf66fa4711a47e0e341f4a4f70127c3ebfd7bbef1206a24dd488108",
                "usr/lib/x86_64-linux-gnu/qt5/examples/quick"),
    "bootstrap": ("libjs-bootstrap5-doc", "5.2.3+dfsg-8",
                  "7c11f1d50fb6b9ad421c1321d133c77f798c781d2f19dd24fdfb74d3e11a720e",
                  "usr/share/doc/libjs-bootstrap5/examples"),
    "castle": ("castle-game-engine-doc", "7.0~alpha.2+dfsg1-5",
               "48a57969553317d938bdcfc7085f4784ae5d429a0c251b0cbd1457477f122693",
               "usr/share/doc/castle-game-engine-doc/examples/deprecated_to_upgrade/fixed_camera_game/data"),
    "psychtoolbox": ("psychtoolbox-3-common", "3.0.18.12.dfsg1-1.1",
                     "8c3271ff5dbc685db95fd279a658eb386ed336e60f60436a20dd0a2a3cb512a7",
                     "usr/share/psychtoolbox-3"),
    "pixbuf": ("gdk-pixbuf-tests:amd64", "2.42.10+dfsg-1+deb12u4",
               "171a99bae12ef6196806a0ac2389ce800be8c2a8db86e9389eba031c7e99ee8d",
               "usr/libexec/installed-tests/gdk-pixbuf"),
    "vigra": ("libvigraimpex-doc", "1.11.1+dfsg-11",
              "87ed076e3d987ad53424427533128e5c30d0d8d1d689c018122eea6e334a80ac",
              "usr/share/doc/libvigraimpex-dev/html"),
    "tlextra": ("texlive-latex-extra-doc", "2022.20230122-4",
                "d222fc748216b216c5659078e8b9b2537242f5fd63af14957f999d33164ecb27",
                "usr/share/doc/texlive-doc"),
    "tlpictures": ("texlive-pictures-doc", "2022.20230122-3",
                   "9f24a348a9461952e09cac3a2c5e1617f00e9054bea1ab1a124a724cc7f40751",
                   "usr/share/doc/texlive-doc/latex"),
    "tlscience": ("texlive-science-doc", "2022.20230122-4",
                  "0e0fcc74646b916402124e8394a7a8d896e1c959cd9b184b0d7a61e08c6e72db",
                  "usr/share/doc/texlive-doc/latex/fascicules"),
    "digikam": ("digikam-data", "4:7.9.0-1",
                "a941a504ba7bdf9d276a43ca3c2a0b2b5b74a55420d8c4b4f29d681e96cbf450",
                "usr/share/digikam/about/images"),
}
SOURCES = set(DEBIAN_SOURCES) | set(PYPI_SOURCES) | set(DEBIAN_ARCHIVES)


@dataclass
class ScenePhoto:
    """One labelled photo of the scenes dev set (what ``manifest.jsonl`` holds)."""

    photo: str  # source:path, the stable key
    file: str  # relative to the dev set folder
    split: str  # "tune" or "held-out"
    kind: str
    entry: str
    tags: list[str]
    people: str
    faces_visible: str
    package: str
    entry_sense: list[str] = field(default_factory=list)  # WordNet keys (dome.n.04); empty: the first sense
    objects: list[str] = field(default_factory=list)  # WordNet keys of other things right to tag


def read_labels(path: Path = LABELS_CSV) -> list[dict]:
    """The hand labels, checked against the vocabularies above."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    problems, seen, wordnet = [], set(), read_senses()
    for row in rows:
        key = row["photo"]
        if key in seen:
            problems.append(f"{key}: listed twice")
        seen.add(key)
        if key.split(":", 1)[0] not in SOURCES:
            problems.append(f"{key}: unknown source")
        if row["kind"] not in KINDS:
            problems.append(f"{key}: kind {row['kind']!r} not in {KINDS}")
        if not row["entry"].strip():
            problems.append(f"{key}: no entry")
        bad = [t for t in tags_of(row) if t not in TAGS]
        if bad:
            problems.append(f"{key}: tags not in the vocabulary: {bad}")
        if row["people"] not in PEOPLE or row["faces_visible"] not in FACES:
            problems.append(f"{key}: people must be one of {PEOPLE}, faces_visible one of {FACES}")
        if bool(row["people"]) != bool(row["faces_visible"]):
            problems.append(f"{key}: faces_visible goes with people, and only with it")
        for sense in senses_of(row, "entry_sense") + senses_of(row, "objects"):
            try:
                synset_by_key(sense, wordnet)
            except ValueError as error:
                problems.append(f"{key}: {error}")
    if problems:
        raise SystemExit(f"{path.name}:\n  " + "\n  ".join(problems))
    return rows


#: Kinds of photo that are also a scene word: a photo the labeller filed as a city is one.
#: ("landscape" and "plant" are tagged photo by photo instead: a close view of dune grass is
#: filed with the landscapes but is no view of scenery.)
KIND_WORDS = {"city": "city", "interior": "interior", "water": "water", "building": "building"}


def words_of(photo: ScenePhoto) -> list[str]:
    """Everything right to tag on a photo: its tags, its entry word, its kind where that is a
    scene word, and "person" (or "people" for a group) where people are in it."""
    people = {"person": ["person"], "portrait": ["person"], "group": ["person", "people"]}.get(photo.people, [])
    kind = [KIND_WORDS[photo.kind]] if photo.kind in KIND_WORDS else []
    return sorted(set(photo.tags + [photo.entry] + kind + people))


def tags_of(row: dict) -> list[str]:
    return [t for t in row["tags"].split(";") if t]


def senses_of(row: dict, column: str) -> list[str]:
    return [s.strip() for s in (row.get(column) or "").split(";") if s.strip()]


def package_of(source: str) -> str:
    if source in DEBIAN_ARCHIVES:
        return DEBIAN_ARCHIVES[source][0].split(":")[0]
    return DEBIAN_SOURCES[source][1] if source in DEBIAN_SOURCES else PYPI_SOURCES[source]


def missing_packages(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(Debian packages, PyPI packages) that the labelled photos need and that are not installed."""
    import importlib.util

    sources = {row["photo"].split(":", 1)[0] for row in rows}
    debian = sorted({pkg for s, (folder, pkg) in DEBIAN_SOURCES.items() if s in sources and not folder.is_dir()})
    pypi = sorted({pkg for s, pkg in PYPI_SOURCES.items() if s in sources and importlib.util.find_spec(s) is None})
    return debian, pypi


# ---- Debian archives, fetched and unpacked once ------------------------------------------

def fetch_command(source: str) -> str:
    package, version, _, _ = DEBIAN_ARCHIVES[source]
    return f"apt-get download {package}={version}"


def deb_archive_folder(source: str, cache: Path = DEB_CACHE) -> Path:
    """The unpacked photo folder of a :data:`DEBIAN_ARCHIVES` source (fetched, checked and unpacked once)."""
    folder = cache / source
    if folder.is_dir():
        return folder
    package, version, digest, inside = DEBIAN_ARCHIVES[source]
    cache.mkdir(parents=True, exist_ok=True)
    debs = f"{package.split(':')[0]}_*.deb"  # apt-get download names it PACKAGE_VERSION_ARCH.deb
    deb = next((f for f in cache.glob(debs) if sha256_of(f) == digest), None)
    if deb is None:
        print(f"fetching {package} {version} for the {source}: photos: {fetch_command(source)}", file=sys.stderr)
        done = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=cache,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deb = next((f for f in cache.glob(debs) if sha256_of(f) == digest), None)
        if deb is None:
            raise SystemExit(
                f"could not fetch Debian's {package} {version} with sha256 {digest}"
                f" ({done.stderr.strip() or 'the file differs'}); fetch it by hand:\n"
                f"  cd {cache} && apt-get update && {fetch_command(source)}\n"
                "or, where Debian no longer has that version, update DEBIAN_ARCHIVES after checking its photos")
    unpack(deb, inside, folder)
    return folder


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: What :func:`unpack` writes: the photos, not the PDFs and sources around them (a TeX Live doc tree is ~1 GB).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def unpack(deb: Path, inside: str, folder: Path) -> None:
    """Write the image files under ``inside`` of a .deb into ``folder`` (paths kept below ``inside``)."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    prefix = inside.strip("/") + "/"
    reader = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=reader.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if (member.isfile() and name.startswith(prefix) and ".." not in Path(name).parts
                    and name.lower().endswith(IMAGE_SUFFIXES)):
                target = partial / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    if reader.wait() != 0 or not partial.is_dir():
        raise SystemExit(f"{deb}: could not unpack {inside} (dpkg-deb failed or the folder is not there)")
    partial.rename(folder)


# ---- reading ------------------------------------------------------------------------------

def source_bytes(source: str, path: str, resources: dict[str, dict[str, bytes]]) -> bytes:
    if source in DEBIAN_ARCHIVES:
        return (deb_archive_folder(source) / path).read_bytes()
    if source == "gcompris":  # gcompris:BUNDLE/PATH__INSIDE (as in devset.py)
        return gcompris_photo(path, resources)
    if source == "opencv":  # html/NAME, examples/SUBPATH, else a file of examples/data
        if path.startswith("html/"):
            return (OPENCV_HTML / path[5:]).read_bytes()
        if path.startswith("examples/"):
            return (OPENCV.parent / path[9:]).read_bytes()
        return (OPENCV / path).read_bytes()
    if source in PYPI_SOURCES:
        return package_folder(source, "data", path).read_bytes()
    return (DEBIAN_SOURCES[source][0] / path).read_bytes()


def load_photo(key: str, resources: dict[str, dict[str, bytes]]) -> Image.Image:
    """The photo a key names, as RGB, its long side at most :data:`MAX_SIDE`."""
    source, path = key.split(":", 1)
    image = Image.open(io.BytesIO(source_bytes(source, path, resources)))
    image.load()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise SystemExit(f"{key}: has transparent pixels (a cut-out), not a photo for this set")
    image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return image


def file_name(key: str) -> str:
    """``source/path__with__folders.jpg``; any character but a letter, digit, ``.``, ``_`` or ``-`` becomes ``_``."""
    source, path = key.split(":", 1)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.rsplit(".", 1)[0].replace("/", "__"))
    return f"{source}/{stem}.jpg"


def record_of(row: dict) -> ScenePhoto:
    """A row of the labels as the record the built dev set keeps (its file name and split too)."""
    key = row["photo"]
    return ScenePhoto(photo=key, file=file_name(key), split=split_of(key), kind=row["kind"], entry=row["entry"].strip(),
                      tags=tags_of(row), people=row["people"], faces_visible=row["faces_visible"],
                      package=package_of(key.split(":", 1)[0]), entry_sense=senses_of(row, "entry_sense"),
                      objects=senses_of(row, "objects"))


def build(out: Path = DEFAULT_OUT) -> list[ScenePhoto]:
    """Write the photos and ``manifest.jsonl`` into ``out``; returns the records."""
    rows = read_labels()
    debian, pypi = missing_packages(rows)
    if debian or pypi:
        lines = ["the scenes dev set needs packages that are not installed:"]
        if debian:
            lines.append("  apt-get install " + " ".join(debian))
        if pypi:
            lines.append("  .venv/bin/pip install " + " ".join(pypi))
        raise SystemExit("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    resources: dict[str, dict[str, bytes]] = {}
    photos = []
    for row in rows:
        photo = record_of(row)
        target = out / photo.file
        target.parent.mkdir(parents=True, exist_ok=True)
        load_photo(photo.photo, resources).save(target, "JPEG", quality=92)
        photos.append(photo)
    files = [p.file for p in photos]
    if len(set(files)) != len(files):
        raise SystemExit("two photos map to one file name")
    write_manifest(out, photos)
    return photos


def load(folder: Path = DEFAULT_OUT) -> list[ScenePhoto]:
    """The records of a built scenes dev set (run this script first)."""
    return read_manifest(folder, ScenePhoto, "scenes_devset.py")


def summary(photos: list[ScenePhoto]) -> str:
    def counts(values) -> str:
        tally: dict[str, int] = {}
        for v in values:
            tally[v] = tally.get(v, 0) + 1
        return ", ".join(f"{k} {n}" for k, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))

    return "\n".join([
        f"{len(photos)} photos",
        "by source: " + counts(p.photo.split(":")[0] for p in photos),
        "by kind: " + counts(p.kind for p in photos),
        "by split: " + counts(p.split for p in photos),
        "by tag: " + counts(t for p in photos for t in p.tags),
        "by people: " + counts(p.people or "none" for p in photos),
        "people with faces hidden: " + counts(p.people for p in photos if p.faces_visible == "no"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write (default {DEFAULT_OUT})")
    parser.add_argument("--commands", action="store_true",
                        help="print the commands that install or fetch every source, and stop")
    args = parser.parse_args()
    if args.commands:
        debian = sorted({pkg for _, pkg in DEBIAN_SOURCES.values()})
        print("apt-get install " + " ".join(debian))
        print(".venv/bin/pip install " + " ".join(sorted(PYPI_SOURCES.values())) + "   # scripts/setup_dev.sh does")
        print(f"mkdir -p {DEB_CACHE} && cd {DEB_CACHE} && apt-get download "
              + " ".join(f"{package}={version}" for package, version, _, _ in DEBIAN_ARCHIVES.values())
              + "   # the build does this itself")
        return
    photos = build(args.out)
    print(f"wrote {args.out}\n" + summary(photos))


if __name__ == "__main__":
    main()
