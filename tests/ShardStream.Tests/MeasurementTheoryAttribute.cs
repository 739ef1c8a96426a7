namespace ShardStream.Tests;

/// <summary>
/// A theory that measures what a document reports and takes too long for every run of the suite
/// (<paramref name="takes"/> says how long): skipped, with a reason saying how to run it, unless
/// the environment variable <see cref="Variable"/> is 1. Its assertions are the document's claims,
/// so a run with the variable set can fail.
/// </summary>
public sealed class MeasurementTheoryAttribute : TheoryAttribute
{
    /// <summary>The environment variable that runs the measurements (1 runs them).</summary>
    public const string Variable = "SHARDSTREAM_MEASURE";

    public MeasurementTheoryAttribute(string takes)
    {
        if (Environment.GetEnvironmentVariable(Variable) != "1")
            Skip = $"a measurement ({takes}): {Variable}=1 runs it, see docs/topology.md";
    }
}
