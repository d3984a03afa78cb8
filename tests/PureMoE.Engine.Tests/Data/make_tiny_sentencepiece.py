#!/usr/bin/env python3
"""Writes tiny-sentencepiece.model, the test fixture for `tokenizer.model` (a Hugging Face Llama/Mixtral checkpoint's
SentencePiece tokenizer): a BPE model of 320 pieces with byte fallback, trained as Llama's was (same model type and
options), on a small generated text. Run once with Debian's python3-sentencepiece; the tests only read the file.
Prints the ids SentencePiece gives a sample, which TokenizerTests expects Microsoft.ML.Tokenizers to give too."""
import io, os, random, sys
import sentencepiece as spm

r = random.Random(7)
words = "the cat a dog my friend sees likes follows river red ball king queen speak hear".split()
lines = [" ".join(r.choice(words) for _ in range(8)) + f" {r.randint(0, 99)}" for _ in range(3000)]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-sentencepiece.model")
model = io.BytesIO()
spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=320, byte_fallback=True,
    character_coverage=1.0, split_digits=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
    normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False)
with open(out, "wb") as f:
    f.write(model.getvalue())
sp = spm.SentencePieceProcessor(model_file=out)
sample = "the king sees a red ball 42 ünï"
print(len(model.getvalue()), "bytes;", sp.vocab_size(), "pieces;", sample, "->", sp.encode(sample), file=sys.stderr)
