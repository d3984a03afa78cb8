using System.Text;

namespace PureMoE.Cli.Data;

/// <summary>
/// The embedded default training text: several synthetic "domains" with different structure, generated from a
/// seed, so a fresh machine can train with no download. Experts have something to specialise on: each domain has
/// its own alphabet and rules, and each is learnable (the loss can fall well below the unigram entropy).
/// </summary>
public static class SyntheticCorpus
{
    /// <summary>The domains, in the order lines are drawn from them.</summary>
    public static IReadOnlyList<string> Domains { get; } = ["arithmetic", "counting", "sentences", "brackets", "reversal"];

    /// <summary>Generates about <paramref name="bytes"/> bytes of text, one example per line.</summary>
    public static string Generate(int bytes, ulong seed = 1234)
    {
        var rng = new Rng(seed);
        var sb = new StringBuilder(bytes + 256);
        while (sb.Length < bytes)
        {
            switch (rng.NextInt(Domains.Count))
            {
                case 0: Arithmetic(sb, rng); break;
                case 1: Counting(sb, rng); break;
                case 2: Sentence(sb, rng); break;
                case 3: Brackets(sb, rng); break;
                default: Reversal(sb, rng); break;
            }
            sb.Append('\n');
        }
        return sb.ToString(0, bytes);
    }

    // "37+48=85": the answer is determined by the question.
    private static void Arithmetic(StringBuilder sb, Rng rng)
    {
        int a = rng.NextInt(100), b = rng.NextInt(100);
        sb.Append(a).Append('+').Append(b).Append('=').Append(a + b);
    }

    // "count 4: 4 5 6 7 8": an arithmetic progression from a start.
    private static void Counting(StringBuilder sb, Rng rng)
    {
        int start = rng.NextInt(50), step = 1 + rng.NextInt(3), n = 4 + rng.NextInt(5);
        sb.Append("count ").Append(start).Append(" by ").Append(step).Append(':');
        for (int i = 0; i < n; i++) sb.Append(' ').Append(start + i * step);
    }

    private static readonly string[] Subjects = ["the cat", "a dog", "my friend", "the old king", "a small bird", "the teacher"];
    private static readonly string[] Verbs = ["sees", "likes", "follows", "finds", "calls", "helps"];
    private static readonly string[] Objects = ["the river", "a red ball", "the green hill", "her brother", "the quiet town", "a loud song"];
    private static readonly string[] Endings = [" today.", " again.", " at night.", " in the morning.", "."];

    // A tiny grammar: subject verb object ending.
    private static void Sentence(StringBuilder sb, Rng rng)
    {
        string s = Subjects[rng.NextInt(Subjects.Length)];
        sb.Append(char.ToUpperInvariant(s[0])).Append(s, 1, s.Length - 1).Append(' ')
          .Append(Verbs[rng.NextInt(Verbs.Length)]).Append(' ')
          .Append(Objects[rng.NextInt(Objects.Length)])
          .Append(Endings[rng.NextInt(Endings.Length)]);
    }

    // Balanced brackets: "([]{()})": every opener is closed in order.
    private static void Brackets(StringBuilder sb, Rng rng)
    {
        const string open = "([{<", close = ")]}>";
        var stack = new Stack<int>();
        int length = 6 + 2 * rng.NextInt(8);
        sb.Append("b:");
        for (int i = 0; i < length; i++)
        {
            int remaining = length - i;
            bool mustClose = stack.Count >= remaining;
            if (stack.Count > 0 && (mustClose || rng.NextDouble() < 0.45))
                sb.Append(close[stack.Pop()]);
            else
            {
                int k = rng.NextInt(open.Length);
                stack.Push(k);
                sb.Append(open[k]);
            }
        }
        while (stack.Count > 0) sb.Append(close[stack.Pop()]);
    }

    // "rev abcde|edcba": copy a random word backwards.
    private static void Reversal(StringBuilder sb, Rng rng)
    {
        int n = 3 + rng.NextInt(6);
        var word = new char[n];
        for (int i = 0; i < n; i++) word[i] = (char)('a' + rng.NextInt(26));
        sb.Append("rev ").Append(word).Append('|');
        Array.Reverse(word);
        sb.Append(word);
    }
}
