"""Data sets (common/data) read by `vflclip dataset`: MedMNIST npz files
written by numpy itself (savez and savez_compressed, uint8 and int64
labels, 28 and 64 px) must come back exactly; bad files must fail with a
message naming the file and the member or CSV line; the real HAM10000
sample folder + labels.csv is read as the csv module reads it, with a
seeded stratified split."""
import csv
import io
import json
import shutil
import struct
import zipfile

import numpy as np
import pytest

from conftest import run

SPLITS = ("train", "val", "test")
CODES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def make_arrays(size, label_dtype, seed=0, n=(12, 4, 6)):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(SPLITS, n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 7, (k, 1)).astype(label_dtype)
    return arrays


def dataset(vflclip, path, *extra, check=True):
    return run([vflclip, "dataset", "--data", path, *extra], check=check)


@pytest.mark.parametrize("writer", ["savez", "savez_compressed"])
@pytest.mark.parametrize("size,label_dtype", [(28, np.uint8), (64, np.int64)])
def test_npz_written_by_numpy_reads_back_exactly(vflclip, tmp_path, writer, size, label_dtype):
    arrays = make_arrays(size, label_dtype, seed=size)
    path = tmp_path / f"dermamnist_{size}.npz"
    getattr(np, writer)(path, **arrays)
    with zipfile.ZipFile(path) as z:   # the layout under test really is what numpy wrote
        methods = {i.compress_type for i in z.infolist()}
    assert methods == {zipfile.ZIP_DEFLATED if writer == "savez_compressed" else zipfile.ZIP_STORED}
    info = json.loads(dataset(vflclip, path, "--dump", tmp_path / "dump").stdout)
    assert info["format"] == "npz"
    worst = 0.0
    for split in SPLITS:
        assert info[split]["n"] == len(arrays[f"{split}_labels"])
        assert (info[split]["height"], info[split]["width"]) == (size, size)
        assert info[split]["labels"] == arrays[f"{split}_labels"][:, 0].tolist()
        images = np.load(tmp_path / "dump" / f"{split}_images.npy")
        worst = max(worst, float(np.abs(images - arrays[f"{split}_images"]).max()))
    print(f"{writer} {size}px {np.dtype(label_dtype).name} labels: max abs pixel diff {worst}")
    assert worst == 0.0


def test_flat_labels_and_big_endian_labels(vflclip, tmp_path):
    arrays = make_arrays(28, np.int64)
    arrays["train_labels"] = arrays["train_labels"][:, 0].astype(">i4")
    np.savez(tmp_path / "d.npz", **arrays)
    info = json.loads(dataset(vflclip, tmp_path / "d.npz").stdout)
    assert info["train"]["labels"] == arrays["train_labels"].tolist()


def expect_error(vflclip, path, *needles, extra=()):
    p = dataset(vflclip, path, *extra, check=False)
    assert p.returncode != 0, p.stdout
    msg = p.stderr.strip()
    print(msg)
    assert len(msg.splitlines()) == 1, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_bad_npz_files_are_rejected_clearly(vflclip, tmp_path):
    good = make_arrays(28, np.uint8)

    a = dict(good, val_images=good["val_images"].astype(np.float32))
    np.savez(tmp_path / "float_images.npz", **a)
    expect_error(vflclip, tmp_path / "float_images.npz", "float_images.npz", "val_images.npy", "uint8")

    a = dict(good, test_images=good["test_images"][..., 0])
    np.savez(tmp_path / "grey.npz", **a)
    expect_error(vflclip, tmp_path / "grey.npz", "grey.npz", "test_images.npy", "(N, H, W, 3)")

    a = dict(good)
    a["train_labels"] = good["train_labels"].copy()
    a["train_labels"][5, 0] = 9
    np.savez_compressed(tmp_path / "range.npz", **a)
    expect_error(vflclip, tmp_path / "range.npz", "range.npz", "train_labels.npy", "row 5", "label 9", "0..6")

    a = dict(good, val_labels=good["val_labels"].astype(np.float32))
    np.savez(tmp_path / "float_labels.npz", **a)
    expect_error(vflclip, tmp_path / "float_labels.npz", "val_labels.npy", "integers")

    a = dict(good, test_labels=good["test_labels"][:-1])
    np.savez(tmp_path / "count.npz", **a)
    expect_error(vflclip, tmp_path / "count.npz", "test_labels.npy", "5 labels", "6 images")

    a = {k: v for k, v in good.items() if k != "val_labels"}
    np.savez(tmp_path / "missing.npz", **a)
    expect_error(vflclip, tmp_path / "missing.npz", "missing.npz", "missing member 'val_labels.npy'")

    np.savez_compressed(tmp_path / "ok.npz", **good)
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    expect_error(vflclip, tmp_path / "truncated.npz", "truncated.npz", "truncated")

    with zipfile.ZipFile(tmp_path / "ok.npz") as z:
        info = z.getinfo("train_images.npy")
    corrupt = bytearray(raw)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    mid = start + info.compress_size // 2
    for i in range(mid, mid + 8):
        corrupt[i] ^= 0x5A
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    expect_error(vflclip, tmp_path / "corrupt.npz", "corrupt.npz", "train_images.npy")

    (tmp_path / "text.npz").write_text("not a zip archive at all, just some text " * 4)
    expect_error(vflclip, tmp_path / "text.npz", "text.npz", "not a zip archive")


def member_data_offset(raw, info):
    """Offset of a member's data: after its local header, whose extra field may differ from the central one."""
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


def set_crc(raw, name, crc):
    """Writes CRC into the member's local header and its central-directory entry, so the archive stays
    self-consistent and only the data no longer matches."""
    out = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        struct.pack_into("<I", out, z.getinfo(name).header_offset + 14, crc)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46:pos + 46 + name_len] == name.encode():
            struct.pack_into("<I", out, pos + 16, crc)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


@pytest.mark.parametrize("writer", ["savez", "savez_compressed"])
def test_numpy_npz_with_bad_crc_or_cut_short_is_refused(vflclip, tmp_path, writer):
    """Archives numpy wrote, then damaged: a wrong CRC-32 (data intact, both headers agree on the wrong value),
    a flipped pixel byte in a stored member (the damage only the CRC can see), and the file cut short at several
    points.  Each is refused in one line naming the file, and the member where there is one."""
    good = make_arrays(28, np.uint8)
    getattr(np, writer)(tmp_path / "ok.npz", **good)
    raw = (tmp_path / "ok.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "ok.npz") as z:
        info = z.getinfo("val_images.npy")
        end_of_data = max(member_data_offset(raw, i) + i.compress_size for i in z.infolist())

    (tmp_path / "badcrc.npz").write_bytes(set_crc(raw, "val_images.npy", info.CRC ^ 0x00010000))
    with zipfile.ZipFile(tmp_path / "badcrc.npz") as z:   # the damage is what Python's zipfile also refuses
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            z.read("val_images.npy")
    expect_error(vflclip, tmp_path / "badcrc.npz", "badcrc.npz", "member 'val_images.npy'", "CRC-32")

    if writer == "savez":   # a stored member: one flipped pixel changes nothing but the CRC
        flipped = bytearray(raw)
        flipped[member_data_offset(raw, info) + info.compress_size - 5] ^= 0x01
        (tmp_path / "bitrot.npz").write_bytes(bytes(flipped))
        expect_error(vflclip, tmp_path / "bitrot.npz", "bitrot.npz", "member 'val_images.npy'", "CRC-32")

    # Cut inside the member data, inside the central directory, and just before the end record.
    for cut in (member_data_offset(raw, info) + info.compress_size // 2, end_of_data + 10, len(raw) - 3):
        (tmp_path / "cut.npz").write_bytes(raw[:cut])
        expect_error(vflclip, tmp_path / "cut.npz", "cut.npz", "truncated")


# ---- image folder + labels CSV (HAM10000 layout) --------------------------------------------------------
def read_labels_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ham10000_sample_folder(vflclip, shared_data):
    folder = shared_data / "ham10000-sample"
    rows = read_labels_csv(folder / "labels.csv")
    info = json.loads(dataset(vflclip, folder).stdout)
    assert info["format"] == "csv"
    got = {}
    for split in SPLITS:
        for i, lab in zip(info[split]["ids"], info[split]["labels"]):
            assert i not in got
            got[i] = (split, lab)
    assert sorted(got) == sorted(r["image_id"] for r in rows)
    for r in rows:
        assert got[r["image_id"]][1] == CODES.index(r["dx"])
    # Stratified 7:1:2 per class, and the same split for the same seed.
    for k in range(7):
        n = sum(1 for r in rows if r["dx"] == CODES[k])
        counts = [info[s]["labels"].count(k) for s in SPLITS]
        assert counts[0] == int(0.7 * n + 0.5) and counts[1] == int(0.1 * n + 0.5), (CODES[k], n, counts)
    again = json.loads(dataset(vflclip, folder).stdout)
    assert again == info
    other = json.loads(dataset(vflclip, folder, "--split-seed", "5").stdout)
    assert other["train"]["ids"] != info["train"]["ids"]
    print("split sizes:", [info[s]["n"] for s in SPLITS])


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_split_column_lesions_and_errors(vflclip, shared_data, tmp_path):
    folder = shared_data / "ham10000-sample"
    rows = read_labels_csv(folder / "labels.csv")[:40]
    splits = ["train", "val", "test", "valid"]
    write_csv(tmp_path / "split.csv", ["image_id", "dx", "split"],
              [(r["image_id"], r["dx"], splits[i % 4]) for i, r in enumerate(rows)])
    info = json.loads(dataset(vflclip, tmp_path / "split.csv", "--image-dir", folder).stdout)
    for i, r in enumerate(rows):
        s = {"valid": "val"}.get(splits[i % 4], splits[i % 4])
        assert r["image_id"] in info[s]["ids"]

    # Images of one lesion never straddle splits.
    write_csv(tmp_path / "lesion.csv", ["lesion_id", "image_id", "dx"],
              [(f"HAM_{i // 3}", r["image_id"], rows[(i // 3) * 3]["dx"]) for i, r in enumerate(rows)])
    info = json.loads(dataset(vflclip, tmp_path / "lesion.csv", "--image-dir", folder).stdout)
    where = {i: s for s in SPLITS for i in info[s]["ids"]}
    for g in range(0, len(rows), 3):
        assert len({where[r["image_id"]] for r in rows[g:g + 3]}) == 1

    write_csv(tmp_path / "fields.csv", ["image_id", "dx"], [(rows[0]["image_id"], rows[0]["dx"])])
    with open(tmp_path / "fields.csv", "a") as f:
        f.write(f"{rows[1]['image_id']},{rows[1]['dx']},extra\n")
    expect_error(vflclip, tmp_path / "fields.csv", "fields.csv line 3", "3 fields", extra=("--image-dir", folder))

    write_csv(tmp_path / "dx.csv", ["image_id", "dx"], [(rows[0]["image_id"], "melanoma?")])
    expect_error(vflclip, tmp_path / "dx.csv", "dx.csv line 2", "melanoma?", extra=("--image-dir", folder))

    write_csv(tmp_path / "gone.csv", ["image_id", "dx"], [(rows[0]["image_id"], "nv"), ("ISIC_9999999", "nv")])
    expect_error(vflclip, tmp_path / "gone.csv", "gone.csv line 3", "ISIC_9999999", "not found",
                 extra=("--image-dir", folder))

    write_csv(tmp_path / "header.csv", ["image", "diagnosis"], [(rows[0]["image_id"], "nv")])
    expect_error(vflclip, tmp_path / "header.csv", "header.csv line 1", "image_id and dx", extra=("--image-dir", folder))

    # A folder holding the CSV and a copy of two images works on its own.
    (tmp_path / "mini").mkdir()
    for r in rows[:2]:
        shutil.copy(folder / f"{r['image_id']}.jpg", tmp_path / "mini")
    write_csv(tmp_path / "mini" / "labels.csv", ["image_id", "dx", "split"],
              [(rows[0]["image_id"], rows[0]["dx"], "train"), (rows[1]["image_id"], rows[1]["dx"], "test")])
    info = json.loads(dataset(vflclip, tmp_path / "mini").stdout)
    assert info["train"]["ids"] == [rows[0]["image_id"]] and info["test"]["ids"] == [rows[1]["image_id"]]


def test_full_ham10000_metadata_layout(vflclip, shared_data, tmp_path):
    """The full metadata CSV's layout (lesion_id,image_id,dx,dx_type,age,sex,localization): the rows of the sample's
    images, images found through --image-dir; labels agree with the sample's labels.csv."""
    sample = {r["image_id"]: r["dx"] for r in read_labels_csv(shared_data / "ham10000-sample" / "labels.csv")}
    with open(shared_data / "ham10000-metadata" / "HAM10000_metadata.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r[header.index("image_id")] in sample]
    assert len(rows) == len(sample)
    write_csv(tmp_path / "meta.csv", header, rows)
    info = json.loads(dataset(vflclip, tmp_path / "meta.csv", "--image-dir", shared_data / "ham10000-sample").stdout)
    got = {i: lab for s in SPLITS for i, lab in zip(info[s]["ids"], info[s]["labels"])}
    assert got == {i: CODES.index(dx) for i, dx in sample.items()}
    # The whole metadata file names 10,015 images that are not here: the first missing one is reported by line.
    expect_error(vflclip, shared_data / "ham10000-metadata" / "HAM10000_metadata.csv", "HAM10000_metadata.csv line 2",
                 "not found")
