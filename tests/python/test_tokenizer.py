"""CLIP tokenizer (common/clip/tokenizer*.c) through `vflclip tokenize`,
against transformers' fast CLIPTokenizer (tokenizers 0.19) loaded in this
process from the very same vocab.json/merges.txt: a table of tricky strings,
a sweep over Unicode code points, seeded random strings, truncation to 77,
OpenAI's .txt.gz giving identical ids, the golden cases from public test
suites, and the project's tiny vocabulary loaded by both transformers
tokenizers.  Expected ids never come from the C code."""
import json
import random
import subprocess

import pytest

from conftest import run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

HF_DIR = "clip-tokenizer/hf-clip-vit-base-patch16"
BPE_GZ = "clip-tokenizer/bpe_simple_vocab_16e6.txt.gz"

TRICKY = [
    "a photo of a cat",
    "A Photo Of A CAT!!!",
    "",
    "Hello, world... (test) [x] {y} <z> a-b_c/d\\e|f~g`h^i",
    "in 1992 there were 3.14159 people; 1,000,000 $5 50% #1 2nd 10x",
    "it's isn't they're we've I'm you'll he'd 'quoted' rock'n'roll O'Neil '' 's",
    "IT'S THEY'RE WE'VE I'M YOU'LL HE'D",
    "?'d'd''d 'sam 'tis",
    "&amp; &lt;b&gt; &quot;x&quot; &#39; &nbsp; AT&T",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n  mixed \u00a0 nbsp \u3000 ideographic \u2028 line sep \u0085 nel",
    "\t\n \r",
    "zero\u200bwidth joiner\u200dx \x1c\x1f controls \x01\x7f",
    "café naïve résumé Ångström façade Ærø",
    "cafe\u0301 A\u030a n\u0303o e\u0301\u0316 \u1100\u1161\u11a8 \u0958 \u212b \u2126 \u212a",
    "Дерматологическое изображение меланомы.",
    "Дерматологическое изображение: базальноклеточная карцинома, ДЕРМАТОФИБРОМА, Ёлка ёж",
    "Σίσυφος ΟΔΥΣΣΕΥΣ ς",
    "İstanbul STRASSE straße ǅemal ﬁne",
    "皮肤病变的照片。皮膚の写真です 피부 병변 사진",
    "a photo 📷 of a 🐱 cat 👍🏽 🇫🇷 👨‍👩‍👧 ❤️",
    "صورة جلدية ١٢٣ תמונה של עור त्वचा की तस्वीर ๑๒๓ ปี",
    "a<|endoftext|>b <|startoftext|>x<|ENDOFTEXT|> <|endoftext",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "½ ² ⅷ ① x² ٣ 𝟙 𝐀𝐁𝐂",
    " ".join(["a photo of a melanocytic nevus"] * 20),
]
LONG = " ".join(f"word{i} and more" for i in range(60))


@pytest.fixture(scope="module")
def hf_dir(shared_data):
    return shared_data / HF_DIR


@pytest.fixture(scope="module")
def fast(hf_dir):
    return transformers.CLIPTokenizerFast.from_pretrained(str(hf_dir))


def c_ids(vflclip, source, texts, *extra):
    """ids from `vflclip tokenize`, one list per text."""
    p = run([vflclip, "tokenize", *source, *extra, "--", *texts])
    lines = p.stdout.splitlines()
    assert len(lines) == len(texts), p.stdout
    return [json.loads(line) for line in lines], p.stderr


def compare(name, texts, expected, got):
    bad = [i for i in range(len(texts)) if expected[i] != got[i]]
    print(f"{name}: {len(texts) - len(bad)}/{len(texts)} texts identical")
    for i in bad[:5]:
        print(f"  {texts[i]!r}\n    hf {expected[i]}\n    c  {got[i]}")
    assert not bad, f"{name}: {len(bad)} texts differ from transformers"


@pytest.mark.parametrize("source", ["hf-dir", "bpe-gz"])
def test_tricky_strings_match_transformers_fast(vflclip, shared_data, fast, source):
    src = ["--model", shared_data / HF_DIR] if source == "hf-dir" else ["--bpe", shared_data / BPE_GZ]
    texts = TRICKY + [LONG]
    expected = fast(texts, truncation=True, max_length=77)["input_ids"]
    got, _ = c_ids(vflclip, src, texts)
    compare(source, texts, expected, got)


def test_truncation_keeps_eot_and_says_so(vflclip, hf_dir, fast):
    for n in (77, 16):
        expected = fast([LONG], truncation=True, max_length=n)["input_ids"][0]
        got, stderr = c_ids(vflclip, ["--model", hf_dir, "--context-length", str(n)], [LONG])
        assert got[0] == expected and len(got[0]) == n and got[0][-1] == fast.eos_token_id
        assert "truncated" in stderr, stderr
    _, stderr = c_ids(vflclip, ["--model", hf_dir], ["a photo of a cat"])
    assert "truncated" not in stderr
    lines = ["a photo of a cat", LONG, "Дерматологическое изображение"]
    p = run([vflclip, "tokenize", "--model", hf_dir, "--stdin"], input="\n".join(lines) + "\n")
    got = [json.loads(x) for x in p.stdout.splitlines()]
    assert got == fast(lines, truncation=True, max_length=77)["input_ids"]
    assert "text 1 was truncated" in p.stderr, p.stderr


def test_words_are_the_ids_without_specials(vflclip, hf_dir, fast):
    texts = TRICKY + [LONG]
    expected = fast(texts, add_special_tokens=False)["input_ids"]
    got, _ = c_ids(vflclip, ["--model", hf_dir, "--words"], texts)
    compare("--words", texts, expected, got)
    assert len(got[-1]) > 77   # no truncation in this mode


def test_golden_cases(vflclip, shared_data, fast):
    golden = json.loads((shared_data / "clip-tokenizer/golden/clip_tokenizer_golden.json").read_text())
    texts = [c["text"] for c in golden["cases"]]
    expected = [c["input_ids"] for c in golden["cases"]]
    assert fast(texts)["input_ids"] == expected, "transformers itself disagrees with the golden file"
    for src in (["--model", shared_data / HF_DIR], ["--bpe", shared_data / BPE_GZ]):
        got, _ = c_ids(vflclip, src, texts, "--context-length", "1000")
        compare(f"golden {src[0]}", texts, expected, got)


def test_unicode_code_point_sweep(vflclip, hf_dir, fast):
    """Every 13th code point (and all of the combining-mark blocks), in runs
    of 40 adjacent characters, then each between letters: exercises the
    letter/number/space classes, NFC and lowercase tables against the
    reference's own."""
    cps = [c for c in range(1, 0x110000, 13) if not 0xD800 <= c <= 0xDFFF]
    for a, b in ((0x300, 0x36F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0x1100, 0x11FF)):
        cps += range(a, b + 1)
    texts = ["".join(map(chr, cps[i:i + 40])) for i in range(0, len(cps), 40)]
    texts += ["x" + chr(c) + "y" for c in cps[::5]]
    expected = fast(texts, add_special_tokens=False)["input_ids"]
    got, _ = c_ids(vflclip, ["--model", hf_dir, "--words"], texts)
    compare("code point sweep", texts, expected, got)


def test_seeded_random_strings(vflclip, hf_dir, fast):
    """Random mixes of combining marks, Hangul jamo, scripts, whitespace,
    contractions and specials (seeded)."""
    ranges = [(0x20, 0x7E), (0xA0, 0x17F), (0x300, 0x36F), (0x591, 0x5C7), (0x64B, 0x65F), (0xE31, 0xE4E),
              (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0x1100, 0x11FF), (0xAC00, 0xAC40), (0x370, 0x3FF),
              (0x400, 0x45F), (0x4E00, 0x4E20), (0x1F300, 0x1F320), (0x2000, 0x200F), (0x3099, 0x309A),
              (0x900, 0x97F), (0x1E900, 0x1E95F), (0x11300, 0x1137F), (0x2126, 0x212B), (0x130, 0x131)]
    extra = ["'s", "'t", "'re", "'ll", "'d", "<|endoftext|>", "<|startoftext|>", "\t", "\n", "  ", "&amp;", "\u00a0"]
    rng = random.Random(2)
    texts = []
    for _ in range(3000):
        parts = [rng.choice(extra) if rng.random() < 0.15 else chr(rng.randint(*rng.choice(ranges)))
                 for _ in range(rng.randint(1, 14))]
        texts.append("".join(parts))
    expected = fast(texts, add_special_tokens=False)["input_ids"]
    got, _ = c_ids(vflclip, ["--model", hf_dir, "--words"], texts)
    compare("random strings", texts, expected, got)


PLAIN = [
    "a photo of a skin lesion", "a dermatoscopic image of melanoma", "basal cell carcinoma",
    "actinic keratoses and intraepithelial carcinoma", "benign keratosis-like lesions", "dermatofibroma",
    "melanocytic nevi", "vascular lesions", "a photo of a cat", "The quick brown fox, 123 times!",
    "it's a test; they're here", "zebra xylophone quasar",
]


def test_tiny_vocabulary_loads_in_transformers(vflclip, tmp_path):
    d = tmp_path / "tiny"
    info = json.loads(run([vflclip, "tokenize", "--write-tiny-vocab", d]).stdout)
    vocab = json.loads((d / "vocab.json").read_text())
    merges = (d / "merges.txt").read_text().splitlines()
    print(f"tiny vocabulary: {len(vocab)} entries, {len(merges) - 1} merges")
    assert info["vocab_size"] == len(vocab) == max(vocab.values()) + 1
    assert vocab["<|startoftext|>"] == info["sot"] == len(vocab) - 2
    assert vocab["<|endoftext|>"] == info["eot"] == len(vocab) - 1
    assert merges[0].startswith("#version") and 100 <= len(merges) - 1 <= 1000
    fast = transformers.CLIPTokenizerFast.from_pretrained(str(d))
    slow = transformers.CLIPTokenizer.from_pretrained(str(d))
    texts = PLAIN + TRICKY + [LONG]
    got, _ = c_ids(vflclip, ["--model", d], texts)
    compare("tiny vs fast", texts, fast(texts, truncation=True, max_length=77)["input_ids"], got)
    # the slow tokenizer runs ftfy + html.unescape first: plain text only
    compare("tiny vs slow", PLAIN, slow(PLAIN)["input_ids"], got[:len(PLAIN)])
    assert max(len(x) for x in got[:len(PLAIN)]) < 40   # merges were learned: words are not spelled out


def test_bad_inputs_give_clear_errors(vflclip, hf_dir, tmp_path):
    p = subprocess.run([vflclip, "tokenize", "--model", str(hf_dir), b"ok \xff\xfe bad"], capture_output=True, text=True)
    assert p.returncode != 0 and "not valid UTF-8" in p.stderr, p.stderr
    p = run([vflclip, "tokenize", "--model", tmp_path, "x"], check=False)
    assert p.returncode != 0 and "vocab.json" in p.stderr, p.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_text('{"a": 0, "b": 1, "<|startoftext|>": 2, "<|endoftext|>": 3')
    (bad / "merges.txt").write_text("#version: 0.2\na b\n")
    p = run([vflclip, "tokenize", "--model", bad, "x"], check=False)
    assert p.returncode != 0 and "vocab.json" in p.stderr and "malformed" in p.stderr, p.stderr
    (bad / "vocab.json").write_text('{"a": 0, "b": 1, "ab": 2, "<|startoftext|>": 3, "<|endoftext|>": 4}')
    (bad / "merges.txt").write_text("#version: 0.2\na b\nab c\n")
    p = run([vflclip, "tokenize", "--model", bad, "x"], check=False)
    assert p.returncode != 0 and "merges.txt line 3" in p.stderr, p.stderr
    gz = tmp_path / "broken.txt.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    p = run([vflclip, "tokenize", "--bpe", gz, "x"], check=False)
    assert p.returncode != 0 and str(gz) in p.stderr, p.stderr
