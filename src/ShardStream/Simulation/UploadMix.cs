using System.Globalization;

namespace ShardStream.Simulation;

/// <summary>One class of peers in an <see cref="UploadMix"/>.</summary>
/// <param name="Upload">Upload of the class as a multiple of the stream rate (0 = uploads nothing).</param>
/// <param name="Fraction">Share of the peers in the class, in (0, 1].</param>
public readonly record struct UploadClass(double Upload, double Fraction);

/// <summary>
/// How peers' uploads are spread: each joining peer draws its upload from these classes with their
/// fractions as probabilities (for example <c>0:0.6,2.5:0.4</c>: 60% of peers upload nothing, as
/// viewers behind a NAT do; 40% upload 2.5 times the stream rate).
/// </summary>
public sealed class UploadMix
{
    /// <summary>How far from 1 the fractions may sum (they are written with a few decimals).</summary>
    private const double SumTolerance = 1e-6;

    private readonly UploadClass[] _classes;

    /// <summary>A mix of <paramref name="classes"/>, validated as <see cref="Parse"/> validates text.</summary>
    /// <exception cref="ArgumentException">A class is invalid or the fractions do not sum to 1.</exception>
    public UploadMix(IEnumerable<UploadClass> classes)
    {
        ArgumentNullException.ThrowIfNull(classes);
        _classes = [.. classes];
        if (_classes.Length == 0)
        {
            throw new ArgumentException("upload mix is empty: give upload:fraction pairs such as 0:0.6,2.5:0.4");
        }

        foreach (var c in _classes)
        {
            // The upper bound is the CLI's for every decimal flag: a budget of floor(U·K) must fit the planner's int counts.
            if (!double.IsFinite(c.Upload) || c.Upload < 0 || c.Upload > 1_000_000)
            {
                throw new ArgumentException($"upload mix: upload {Text(c.Upload)} must be a finite multiple of the stream rate >= 0 (at most 1000000)");
            }

            if (!double.IsFinite(c.Fraction) || c.Fraction is <= 0 or > 1)
            {
                throw new ArgumentException($"upload mix: fraction {Text(c.Fraction)} of upload {Text(c.Upload)} must be in (0, 1]");
            }
        }

        var sum = _classes.Sum(c => c.Fraction);
        if (Math.Abs(sum - 1) > SumTolerance)
        {
            throw new ArgumentException($"upload mix: fractions sum to {Text(sum)}, not 1 ({ToString()})");
        }
    }

    /// <summary>The classes, in the order given.</summary>
    public IReadOnlyList<UploadClass> Classes => _classes;

    /// <summary>The mean upload of a peer, as a multiple of the stream rate.</summary>
    public double MeanUpload => _classes.Sum(c => c.Upload * c.Fraction);

    /// <summary>
    /// Parses <c>upload:fraction</c> pairs separated by commas (invariant culture, e.g.
    /// <c>0:0.6,2.5:0.4</c>); the fractions must sum to 1.
    /// </summary>
    /// <exception cref="ArgumentException">The text is not such a list; the message says what is wrong.</exception>
    public static UploadMix Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var classes = new List<UploadClass>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            var pair = part.Split(':', StringSplitOptions.TrimEntries);
            if (pair.Length != 2
                || !double.TryParse(pair[0], NumberStyles.Float, CultureInfo.InvariantCulture, out var upload)
                || !double.TryParse(pair[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var fraction))
            {
                throw new ArgumentException($"upload mix: \"{part}\" is not upload:fraction (for example 0:0.6,2.5:0.4)");
            }

            classes.Add(new UploadClass(upload, fraction));
        }

        return new UploadMix(classes);
    }

    /// <summary>Draws one peer's upload: class i with probability Fraction(i).</summary>
    public double Draw(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var x = random.NextDouble();
        foreach (var c in _classes)
        {
            if (x < c.Fraction)
            {
                return c.Upload;
            }

            x -= c.Fraction;
        }

        // Only reached when rounding leaves x a hair above the last fraction.
        return _classes[^1].Upload;
    }

    /// <summary>The mix as <see cref="Parse"/> reads it.</summary>
    public override string ToString() => string.Join(",", _classes.Select(c => $"{Text(c.Upload)}:{Text(c.Fraction)}"));

    private static string Text(double value) => value.ToString("0.######", CultureInfo.InvariantCulture);
}
