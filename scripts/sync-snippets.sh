#!/usr/bin/env bash
# Rewrites every code block that follows a "<!-- snippet: docs/snippets/NAME.cs -->" line in README.md, docs/ and
# the package READMEs with the current content of that file (the tests compile and run the files, and fail when a
# document's block differs: SnippetTests.DocsShowTheSnippetFilesVerbatim).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - README.md engine/PureMoE.Engine/README.md moe/PureMoE.Moe/README.md $(find docs -name '*.md') <<'PY'
import re, sys
pattern = re.compile(r"(<!-- snippet: (\S+) -->\r?\n```csharp\r?\n)(.*?)(```)", re.S)
for doc in sys.argv[1:]:
    text = open(doc, encoding='utf-8').read()
    new = pattern.sub(lambda m: m.group(1) + open(m.group(2), encoding='utf-8').read() + m.group(4), text)
    if new != text:
        open(doc, 'w', encoding='utf-8').write(new)
        print(f"updated {doc}")
PY
