using System.Globalization;
using System.Text.RegularExpressions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Checks the coordinator's holds of claimed coordinates by what children measured (event 1688):
/// the plan's estimate to the child that contradicted the claim most, once held, is no farther from
/// what that child measured than the claim's estimate was. Nearer, as a rule; as near when the hold
/// only kept the node as far from that child as the claim put it (CoordinateWitnesses.Hold: the fit
/// had put it nearer, and one child's shortfall alone raises no height), compared as logged, to 0.1 ms.
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
            Assert.True(Math.Abs(measured - held) <= Math.Abs(measured - claimed), $"a hold took the plan farther from what the child measured: {line}");
        }
    }

    private static double Number(Match m, int group) => double.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"claims a coordinate that puts it ([\d.]+) ms from peer \d+, which measured it at least ([\d.]+) ms away .*, ([\d.]+) ms from peer \d+$")]
    private static partial Regex HoldLine();
}
