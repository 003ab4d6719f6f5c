"""Dataset readers: labels CSV, folders, LFW pairs and gender lists, CelebA metadata."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from facepriv.datasets import (
    Labels,
    Sample,
    celeba_labels,
    folder_labels,
    read_celeba_attributes,
    read_celeba_identities,
    read_labels_csv,
    read_lfw_gender,
    read_lfw_pairs,
    write_labels_csv,
)
from facepriv.errors import InputFileError, OutputExistsError, ParameterError
from facepriv.registry import available, create

# ---------------------------------------------------------------- labels CSV


def _write(p, text: str):
    p.write_text(text, encoding="utf-8")
    return p


def test_labels_csv_reads_real_file(celeba_dir):
    lab = read_labels_csv(celeba_dir / "labels.csv", root=celeba_dir)
    assert len(lab) == 5121
    # one identity folder each (249: the data README's "250" counts one too many)
    assert len(set(lab.identity)) == len([d for d in celeba_dir.iterdir() if d.is_dir()]) == 249
    g = Counter(lab.gender)
    assert set(g) == {"male", "female", ""} and g["female"] > g["male"] > 0
    assert all(im.split("/")[0] == ident for im, ident in zip(lab.images, lab.identity, strict=True))


def test_labels_csv_extra_columns_and_normalisation(tmp_path):
    p = _write(tmp_path / "l.csv", "\ufeffimage,identity,gender,age\n./a/1.jpg,a,M,30\na\\2.jpg,a,Female,31\n\nb/1.png,b,,40\n")
    lab = read_labels_csv(p)
    assert lab.images == ["a/1.jpg", "a/2.jpg", "b/1.png"]
    assert lab.gender == ["male", "female", ""]
    assert lab.attributes["age"] == ["30", "31", "40"]
    assert lab.row(2) == {"image": "b/1.png", "identity": "b", "gender": "", "age": "40"}
    # no gender column is allowed: gender is then unknown
    assert read_labels_csv(_write(tmp_path / "n.csv", "identity,image\nx,1.jpg\n")).gender is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("   \n", "empty file"),
        ("image,gender\na.jpg,male\n", r"lacks column\(s\) identity"),
        ("file,identity\na.jpg,x\n", r"lacks column\(s\) image"),
        ("image,identity,gender\n", "no rows"),
        ("image,identity,gender\na.jpg,x,male\nb.jpg,y\n", "line 3: 2 field"),
        ("image,identity,gender\na.jpg,x,male\na.jpg,y,male\n", "1 duplicate image.*a.jpg \\(lines 2 and 3\\)"),
        ("image,identity,gender\na.jpg,x,robot\n", "line 2: gender 'robot' not understood"),
        ("image,identity,gender\n/etc/passwd,x,male\n", "line 2: image path '/etc/passwd'"),
        ("image,identity,gender\n../up.jpg,x,male\n", "line 2: image path '../up.jpg'"),
        ("image,identity,gender\na.jpg,,male\n", "line 2: empty identity"),
        ("image,identity,image\na.jpg,x,b.jpg\n", "duplicate or empty column"),
    ],
)
def test_labels_csv_errors_name_file_and_problem(tmp_path, text, message):
    p = _write(tmp_path / "labels.csv", text)
    with pytest.raises(InputFileError, match=message) as ei:
        read_labels_csv(p)
    assert str(p) in str(ei.value)


def test_labels_csv_missing_file_and_missing_images(tmp_path, celeba_dir):
    with pytest.raises(InputFileError, match="no such labels file"):
        read_labels_csv(tmp_path / "nope.csv")
    _write(tmp_path / "bin.csv", "")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00image")
    with pytest.raises(InputFileError, match="not a UTF-8"):
        read_labels_csv(tmp_path / "bin.csv")
    src = sorted((celeba_dir / "07201").iterdir())[0]
    (tmp_path / "p").mkdir()
    shutil.copy(src, tmp_path / "p" / "ok.jpg")
    rows = "".join(f"p/gone{i}.jpg,p,male\n" for i in range(12))
    p = _write(tmp_path / "l.csv", "image,identity,gender\np/ok.jpg,p,male\n" + rows)
    assert len(read_labels_csv(p)) == 13  # without root nothing is checked
    with pytest.raises(InputFileError, match=r"12 of 13 listed image\(s\) do not exist .*p/gone0.jpg.* and 2 more"):
        read_labels_csv(p, root=tmp_path)


def test_write_labels_roundtrip(tmp_path):
    lab = Labels(["a/1.jpg", "b/2.jpg"], ["a", "b"], {"gender": ["male", ""], "age": ["3", "4"]})
    p = write_labels_csv(lab, tmp_path / "o.csv")
    back = read_labels_csv(p)
    assert (back.images, back.identity, back.attributes) == (lab.images, lab.identity, lab.attributes)
    with pytest.raises(OutputExistsError):
        write_labels_csv(lab, p)


# ---------------------------------------------------------------- folders


def test_folder_dataset_component(facescrub_dir, tmp_path):
    assert "folder" in available("dataset")
    ds = create("dataset", "folder", {"root": str(facescrub_dir)})
    s = ds.samples()
    assert len(s) == 868 and isinstance(s[0], Sample)
    assert Counter(x.identity for x in s).most_common(1)[0][1] >= 135 and len({x.identity for x in s}) == 6
    assert all(x.gender == "" for x in s)
    ds = create("dataset", "folder", {"root": str(facescrub_dir), "labels": str(facescrub_dir / "labels.csv")})
    s = ds.samples()
    assert {x.gender for x in s} == {"male", "female"}
    assert ds.path(s[0]).is_file()
    with pytest.raises(ParameterError, match="not a folder"):
        create("dataset", "folder", {"root": str(tmp_path / "none")})
    with pytest.raises(ParameterError, match="unknown parameter"):
        create("dataset", "folder", {"root": str(tmp_path), "label": "x"})
    with pytest.raises(InputFileError, match="no image files found"):
        folder_labels(tmp_path)


# ---------------------------------------------------------------- LFW


def test_lfw_pairs_real_file(lfw_meta_dir):
    pairs = read_lfw_pairs(lfw_meta_dir / "pairs.txt")
    assert len(pairs) == 6000
    per_fold = Counter((p.fold, p.genuine) for p in pairs)
    assert per_fold == {(f, g): 300 for f in range(10) for g in (True, False)}
    first = pairs[0]
    assert first.genuine and first.path1 == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert first.path2 == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert all(p.path1.split("/")[0] == p.path2.split("/")[0] for p in pairs if p.genuine)
    assert all(p.path1.split("/")[0] != p.path2.split("/")[0] for p in pairs if not p.genuine)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("ten 300\n", "line 1: header"),
        ("1 1\nA 1 2\n", "file has 1 lines"),
        ("1 1\nA 1 2\nB 1 C x\n", "line 3: 'x' is not an image number"),
        ("1 1\nA 1 2 3\nB 1 C 2\n", "line 2: 'A 1 2 3' is not a genuine"),
        ("1 1\nA 1 2\nB 1 2\n", "line 3: 'B 1 2' is not a impostor"),
        ("1 1\nA 0 2\nB 1 C 2\n", "line 2: image number 0"),
    ],
)
def test_lfw_pairs_errors(tmp_path, text, message):
    p = _write(tmp_path / "pairs.txt", text)
    with pytest.raises(InputFileError, match=message):
        read_lfw_pairs(p)


def test_lfw_pairs_single_set_header(tmp_path):
    pairs = read_lfw_pairs(_write(tmp_path / "dev.txt", "1\nA_B\t1\t2\nA_B\t3\tC\t1\n"))
    assert [(p.fold, p.genuine) for p in pairs] == [(0, True), (0, False)]
    assert pairs[1].path2 == "C/C_0001.jpg"


def test_lfw_gender_lists(lfw_meta_dir, tmp_path):
    g = read_lfw_gender(lfw_meta_dir / "male_names.txt", lfw_meta_dir / "female_names.txt")
    assert len(g.by_image) == 13230  # 10,268 + 2,967 names, 5 of them in both lists
    assert len(g.conflicts) == 5 and all(g.by_image[c] == "" for c in g.conflicts)
    assert g.by_identity["George_W_Bush"] == "male"
    assert g.gender_of("George_W_Bush/George_W_Bush_0001.jpg") == "male"
    assert g.by_identity["Serena_Williams"] == "female"
    assert g.gender_of("Nobody_Known/Nobody_Known_0001.jpg") == ""
    assert Counter(g.by_identity.values())["female"] > 1000
    empty = _write(tmp_path / "f.txt", "\n")
    with pytest.raises(InputFileError, match="no image names"):
        read_lfw_gender(lfw_meta_dir / "male_names.txt", empty)
    with pytest.raises(InputFileError, match="line 2"):
        read_lfw_gender(_write(tmp_path / "m.txt", "A_0001.jpg\nnot a name\n"), lfw_meta_dir / "female_names.txt")


# ---------------------------------------------------------------- CelebA


_IDS = "000001.jpg 2880\n000002.jpg 2937\n000003.jpg 2880\n000004.jpg 2880\n"
_ATTRS = (
    "4\n"
    "Bald Male Young\n"
    "000001.jpg -1  1  1\n"
    "000002.jpg -1 -1  1\n"
    "000003.jpg  1  1 -1\n"
    "000004.jpg -1 -1 -1\n"
)


def test_celeba_readers(tmp_path):
    ids = read_celeba_identities(_write(tmp_path / "identity_CelebA.txt", _IDS))
    assert ids == {"000001.jpg": "2880", "000002.jpg": "2937", "000003.jpg": "2880", "000004.jpg": "2880"}
    names, rows = read_celeba_attributes(_write(tmp_path / "list_attr_celeba.txt", _ATTRS))
    assert names == ["Bald", "Male", "Young"] and rows["000003.jpg"] == [1, 1, -1]
    # the Kaggle CSV variant
    names2, rows2 = read_celeba_attributes(
        _write(tmp_path / "a.csv", "image_id,Bald,Male,Young\n000001.jpg,-1,1,1\n000002.jpg,-1,-1,1\n")
    )
    assert names2 == names and rows2["000002.jpg"] == [-1, -1, 1]


def test_celeba_labels(tmp_path):
    idf = _write(tmp_path / "identity_CelebA.txt", _IDS)
    atf = _write(tmp_path / "list_attr_celeba.txt", _ATTRS)
    lab = celeba_labels(idf, atf)
    assert lab.images == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert lab.identity == ["2880", "2937", "2880", "2880"]
    assert lab.gender == ["male", "female", "male", "female"]
    lab = celeba_labels(idf, atf, images=["000004.jpg", "000002.jpg"], path_format="{identity:0>5}/{image}",
                        gender_by="identity")
    assert lab.images == ["02880/000004.jpg", "02937/000002.jpg"]
    assert lab.gender == ["male", "female"]  # identity 2880: 2 of 3 images male
    with pytest.raises(InputFileError, match="1 image\\(s\\) not listed: 999.jpg"):
        celeba_labels(idf, atf, images=["999.jpg"])
    with pytest.raises(ParameterError, match="path_format"):
        celeba_labels(idf, path_format="{person}/{image}")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("identity_CelebA.txt", "000001.jpg\n", "line 1: '000001.jpg' is not 'IMAGE IDENTITY'"),
        ("identity_CelebA.txt", "a.jpg 1\nb.jpg 2\na.jpg 3\n", "line 3: image a.jpg is listed twice"),
        ("identity_CelebA.txt", "", "empty file"),
        ("list_attr_celeba.txt", "2\nBald Male\n000001.jpg 1\n", "line 3: 1 value"),
        ("list_attr_celeba.txt", "2\nBald Male\n000001.jpg 1 5\n", "line 3: attribute values must be -1 or 1"),
        ("list_attr_celeba.txt", "2\n", "line 2: missing the attribute names"),
    ],
)
def test_celeba_errors(tmp_path, name, text, message):
    p = _write(tmp_path / name, text)
    reader = read_celeba_identities if name.startswith("identity") else read_celeba_attributes
    with pytest.raises(InputFileError, match=message):
        reader(p)


def test_lfw_dataset_component(celeba_dir, lfw_meta_dir, tmp_path):
    """LFW layout built from real photos; gender from the real LFW lists."""
    src = sorted((celeba_dir / "07201").iterdir())[:2]
    for name, f in (("George_W_Bush", src[0]), ("Serena_Williams", src[1])):
        (tmp_path / name).mkdir()
        shutil.copy(f, tmp_path / name / f"{name}_0001.jpg")
    ds = create("dataset", "lfw", {"root": str(tmp_path), "pairs": str(lfw_meta_dir / "pairs.txt"),
                                   "male_names": str(lfw_meta_dir / "male_names.txt"),
                                   "female_names": str(lfw_meta_dir / "female_names.txt")})
    assert ds.samples() == [Sample("George_W_Bush/George_W_Bush_0001.jpg", "George_W_Bush", "male"),
                            Sample("Serena_Williams/Serena_Williams_0001.jpg", "Serena_Williams", "female")]
    assert len(ds.pair_list()) == 6000
    with pytest.raises(ParameterError, match="both male_names and female_names"):
        create("dataset", "lfw", {"root": str(tmp_path), "male_names": str(lfw_meta_dir / "male_names.txt")})


# ---------------------------------------------------------------- links leading outside the root (issue 14, item 10)
def _photo_folder(celeba_dir, tmp_path):
    root = tmp_path / "data"
    (root / "alice").mkdir(parents=True)
    src = sorted((celeba_dir / "07201").iterdir())[0]
    shutil.copy(src, root / "alice" / "a.jpg")
    return root, src


def test_symlink_leading_outside_the_root_is_refused(celeba_dir, tmp_path):
    from facepriv.pipeline import align_images

    root, src = _photo_folder(celeba_dir, tmp_path)
    (root / "alice" / "inside.jpg").symlink_to(root / "alice" / "a.jpg")  # stays inside: fine
    (root / "alice" / "store.jpg").symlink_to(src)  # a photo in a shared store: fine
    assert folder_labels(root).images == ["alice/a.jpg", "alice/inside.jpg", "alice/store.jpg"]
    link = root / "alice" / "passwd.jpg"
    link.symlink_to("/etc/passwd")
    with pytest.raises(InputFileError, match=r"passwd.jpg: this symbolic link leads outside the dataset root .* "
                                             r"to /etc/passwd, which is no image file; refused"):
        folder_labels(root)
    # through a labels CSV, and a linked folder
    link.unlink()
    (root / "bob").symlink_to("/etc", target_is_directory=True)
    csv_path = _write(tmp_path / "l.csv", "image,identity\nalice/store.jpg,alice\nbob/passwd,bob\n")
    with pytest.raises(InputFileError, match=r"bob/passwd: this symbolic link leads outside"):
        read_labels_csv(csv_path, root=root)
    # an embeddings file's ids go through align_images: refused before any file is opened
    with pytest.raises(InputFileError, match="leads outside the dataset root"):
        align_images(root, ["alice/a.jpg", "../../etc/passwd"], "dlib_chip150", cache=False)
    with pytest.raises(InputFileError, match="leads outside the dataset root"):
        align_images(root, ["/etc/passwd"], "dlib_chip150", cache=False)


def test_cli_embed_refuses_a_link_to_etc_passwd(celeba_dir, tmp_path, capsys):
    from facepriv.cli.main import main

    root, _ = _photo_folder(celeba_dir, tmp_path)
    (root / "alice" / "x.png").symlink_to("/etc/passwd")
    assert main(["embed", str(root), "--out", str(tmp_path / "E.npz"), "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facepriv: error: ") and "x.png" in err and "outside the dataset root" in err
    assert not (tmp_path / "E.npz").exists()
