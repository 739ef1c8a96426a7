using System.Globalization;
using System.Text.RegularExpressions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Checks the coordinator's holds of claimed coordinates by what children measured (event 1688):
/// the plan's estimate to the child that contradicted the claim most, once held, is no farther from
/// what that child measured than the claim's estimate was. Nearer, as a rule; as near when the hold
/// only kept the node as far from that child as the claim put it (CoordinateWitnesses.Hold: the fit
/// had put it nearer, and one child's shortfall alone raises no height), or stopped a raise as far
/// past what the child measured as the claim was short of it (the raise to the coordinator's own
/// measurement would have gone farther). Compared as logged, to 0.1 ms (<see cref="LoggedPrecisionMs"/>).
/// </summary>
internal static partial class WitnessHoldAssert
{
    public static void EachBringsThePlanNearerWhatWasMeasured(LogCapture log) =>
        EachBringsThePlanNearerWhatWasMeasured(log.Lines.Select(l => l.Message).Where(m => m.Contains("claims a coordinate that puts it", StringComparison.Ordinal)));

    public static void EachBringsThePlanNearerWhatWasMeasured(IEnumerable<string> lines)
    {
        foreach (string line in lines)
        {
            var m = HoldLine().Match(line);
            Assert.True(m.Success, $"an event 1688 line not understood: {line}");
            double claimed = Number(m, 1), measured = Number(m, 2), held = Number(m, 3);
            Assert.True(Math.Abs(measured - held) <= Math.Abs(measured - claimed) + LoggedPrecisionMs, $"a hold took the plan farther from what the child measured: {line}");
        }
    }

    /// <summary>
    /// Each figure is logged to 0.1 ms, so off by up to 0.05 ms; a hold stopped past what the child
    /// measured compares held + claimed with twice measured: up to 0.05 + 0.05 + 2 x 0.05 off.
    /// </summary>
    private const double LoggedPrecisionMs = 0.2;

    private static double Number(Match m, int group) => double.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"claims a coordinate that puts it ([\d.]+) ms from peer \d+, which measured it at least ([\d.]+) ms away .*, ([\d.]+) ms from peer \d+$")]
    private static partial Regex HoldLine();
}
