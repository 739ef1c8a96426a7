using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>
/// What the peers that had a node as their parent in the plan measured to it (the least RTT of
/// their parent link, from their heartbeats), and the rule that holds the node's claimed coordinate
/// against it (docs/security.md, "Lies about RTTs and coordinates"). The coordinator checks a
/// claim's distance to itself on the control link; these check its direction. A claim that puts
/// the node grossly nearer at least <see cref="MinWitnesses"/> distinct witnesses than they
/// measured it is held where their RTTs, and the coordinator's own, put it, and stays held while
/// one witness still contradicts it and another bears that out (<see cref="Hold"/>). One witness
/// alone neither starts nor keeps a hold, so a lying child cannot move an honest parent in the
/// plan by itself. Under the coordinator's lock.
/// </summary>
internal sealed class CoordinateWitnesses
{
    /// <summary>Witnesses kept per node, latest report first: the cost of a check is bounded by it.</summary>
    public const int MaxWitnesses = 16;

    /// <summary>Distinct witnesses that must contradict a claim before it is held otherwise.</summary>
    public const int MinWitnesses = 2;

    /// <summary>
    /// Least gap (ms) between what a witness measured and what the claim gives, besides the factor
    /// of 2, for the witness to contradict it. Honest coordinates fall that short on short edges:
    /// with 20 ms, honest relays of LatencyMovesTests (world model, 60 peers) were contradicted
    /// by two children or more 3 and 22 times in one run of seeds 11 and 3, the worst child's
    /// figure 63.0 ms measured against 11.2 estimated (edges within a region, whose access links
    /// the coordinates had not learnt); a claim that places a node of another region next to its
    /// children is short by its whole detour (over 140 ms in LyingDirectionTests).
    /// </summary>
    public const double SlackMs = 60;

    /// <summary>Rounds of the fit over the witnesses and the coordinator (each a Vivaldi step per sample).</summary>
    private const int FitRounds = 24;

    private readonly List<(int Witness, double MeasuredMs)> _measured = [];

    /// <summary>True while the last <see cref="Hold"/> held the claim elsewhere: what decides whether one contradicting witness keeps it held.</summary>
    public bool Held { get; private set; }

    /// <summary>Witnesses kept now.</summary>
    public int Count => _measured.Count;

    /// <summary><paramref name="witness"/> measured the node at least <paramref name="measuredMs"/> (RTT): replaces its earlier figure.</summary>
    public void Note(int witness, double measuredMs)
    {
        _measured.RemoveAll(m => m.Witness == witness);
        _measured.Insert(0, (witness, measuredMs));
        if (_measured.Count > MaxWitnesses) _measured.RemoveAt(MaxWitnesses);
    }

    /// <summary>True when <paramref name="measuredMs"/> says the claim's <paramref name="estimatedMs"/> is grossly short: less than half, and by more than <see cref="SlackMs"/>.</summary>
    public static bool Contradicts(double estimatedMs, double measuredMs) => estimatedMs < measuredMs / 2 && measuredMs - estimatedMs > SlackMs;

    /// <summary>True when <paramref name="measuredMs"/> is more than <see cref="SlackMs"/> above the claim's <paramref name="estimatedMs"/>, twice it or not: a witness that bears out another's contradiction of a held claim.</summary>
    public static bool BearsOut(double estimatedMs, double measuredMs) => measuredMs - estimatedMs > SlackMs;

    /// <summary>
    /// The coordinate the plan holds for a node that claims <paramref name="claim"/> (already held
    /// to the coordinator's own measurement, <paramref name="sourceRttMs"/>; NaN when it has none).
    /// <paramref name="coordinateOf"/> gives a witness's coordinate in the plan (null: gone, or
    /// none; it is forgotten). A hold starts when at least <see cref="MinWitnesses"/> witnesses
    /// contradict the claim, and lasts (<see cref="Held"/>) until none does, or only one does and
    /// no other witness bears it out (<see cref="BearsOut"/>): a claim that stays put while its
    /// witnesses' coordinates drift in the plan is not let go as soon as one of two drifts, and a
    /// lying witness cannot keep an honest node held alone once the others agree with its claim.
    /// While held, the node is fitted (Vivaldi, from the claim, sure of nothing) to what every
    /// witness with a coordinate and the coordinator measured, then its height raised by the
    /// <see cref="MinWitnesses"/>-th largest shortfall left (none when one witness is left short:
    /// one witness's word does not choose the height), so that fewer than that many still
    /// contradict it, then by what it lacks of the claim's distance to any witness that contradicted
    /// the claim (never nearer one of them than the claim put it: a raise bounded by the claim's
    /// own distances, not by what a witness reported), and then by what it lacks of the coordinator's
    /// own measurement; but no raise takes it farther past what a witness that contradicted the claim
    /// measured than the claim was short of it, so it is held no nearer the coordinator than that
    /// measured as far as that bound allows. When the fit itself is past that bound (no height is
    /// lowered), the claim is held where it is instead, raised the same way from the claim's own
    /// shortfalls, and by at most twice the least of them. <paramref name="contradiction"/>:
    /// the witness that contradicted the claim most, and how many did (Count 0 when none).
    /// </summary>
    public NetworkCoordinate Hold(NetworkCoordinate claim, double sourceRttMs, Func<int, NetworkCoordinate?> coordinateOf, Vivaldi vivaldi, out Contradiction contradiction)
    {
        contradiction = default;
        bool wasHeld = Held;
        Held = false;
        if (claim.Error >= 1 || _measured.Count < MinWitnesses) return claim;
        int count = 0, bearing = 0;
        for (int i = _measured.Count - 1; i >= 0; i--)
        {
            var (witness, measured) = _measured[i];
            if (coordinateOf(witness) is not { Error: < 1 } at)
            {
                _measured.RemoveAt(i);
                continue;
            }
            double estimated = claim.EstimateRtt(at);
            if (BearsOut(estimated, measured)) bearing++;
            if (!Contradicts(estimated, measured)) continue;
            count++;
            if (count == 1 || measured - estimated > contradiction.MeasuredMs - contradiction.EstimatedMs)
                contradiction = new Contradiction(witness, estimated, measured, 0);
        }
        contradiction = contradiction with { Count = count };
        // bearing counts the contradicting witnesses too: with one of them, a second is one that bears it out.
        Held = count >= MinWitnesses || (wasHeld && count == 1 && bearing >= MinWitnesses);
        if (!Held) return claim;

        var remotes = new NetworkCoordinate[_measured.Count + 1];
        var rtts = new double[_measured.Count + 1];
        for (int i = 0; i < _measured.Count; i++) (remotes[i], rtts[i]) = (coordinateOf(_measured[i].Witness)!.Value, _measured[i].MeasuredMs);
        int witnesses = _measured.Count;
        int samples = witnesses;
        if (sourceRttMs > 0) (remotes[samples], rtts[samples++]) = (Coordinator.Anchor, sourceRttMs);
        var fitted = vivaldi.Fit(claim with { Error = 1 }, remotes.AsSpan(0, samples), rtts.AsSpan(0, samples), FitRounds);
        var shortfalls = new List<double>(witnesses);
        for (int i = 0; i < witnesses; i++)
        {
            double estimated = fitted.EstimateRtt(remotes[i]);
            if (Contradicts(estimated, rtts[i])) shortfalls.Add(rtts[i] - estimated);
        }
        // The fit weighs every witness, those that agree with the claim too, and can end nearer a
        // witness that contradicted the claim than the claim put it (left short alone, it raised no
        // height above): the evidence said farther, so it is held at least as far as claimed
        // (least). A held claim is contested: the one distance the coordinator measured itself is
        // taken whole, not to within half as for a claim that stands; every RTT it measured is at
        // least the path's, so the node is held no nearer the coordinator than it is. But no raise
        // takes it farther from what a witness that contradicted the claim measured than the claim
        // was (most): the hold is to bring the plan nearer what was measured, and the fit's shape
        // can make a raise that reaches the coordinator's figure overshoot a witness's.
        double least = 0, most = double.PositiveInfinity;
        var claimShortfalls = new List<double>(witnesses);
        for (int i = 0; i < witnesses; i++)
        {
            double claimed = claim.EstimateRtt(remotes[i]);
            if (!Contradicts(claimed, rtts[i])) continue;
            double fit = fitted.EstimateRtt(remotes[i]);
            least = Math.Max(least, claimed - fit);
            most = Math.Min(most, (2 * rtts[i]) - claimed - fit);
            claimShortfalls.Add(rtts[i] - claimed);
        }
        double raise = Math.Min(Math.Max(Raise(shortfalls, fitted), least), most);
        if (raise >= least)
        {
            fitted = fitted with { Height = fitted.Height + raise };
        }
        else
        {
            // The fit itself is past what one such witness measured by more than the claim was
            // short of it, or cannot be as far as claimed from one and within that from another:
            // the claim is held where it is, raised by the second largest shortfall of the
            // witnesses that contradicted it and up to the coordinator's measurement, but by no
            // more than twice the least of those shortfalls, so by none past what a witness measured
            // by more than the claim was short of it.
            raise = Raise(claimShortfalls, claim);
            raise = claimShortfalls.Count == 0 ? 0 : Math.Min(raise, 2 * claimShortfalls[0]);
            fitted = claim with { Height = claim.Height + raise, Error = fitted.Error };
        }
        return fitted with { Error = Math.Max(claim.Error, Math.Min(fitted.Error, 0.95)) };

        // The raise of a node held at `from`, wanted by the witnesses still short and by the
        // coordinator: the MinWitnesses-th largest of the shortfalls (sorted here, least first),
        // and at least what `from` lacks of the coordinator's own measurement.
        double Raise(List<double> shortfallsLeft, NetworkCoordinate from)
        {
            shortfallsLeft.Sort();
            double byWitnesses = shortfallsLeft.Count >= MinWitnesses ? shortfallsLeft[^MinWitnesses] : 0;
            return sourceRttMs > 0 ? Math.Max(byWitnesses, sourceRttMs - from.EstimateRtt(Coordinator.Anchor)) : byWitnesses;
        }
    }
}

/// <summary>The witness that contradicts a claim most (<see cref="CoordinateWitnesses.Hold"/>): the RTT the claim gives to it, what it measured, and how many witnesses contradict the claim.</summary>
internal readonly record struct Contradiction(int Witness, double EstimatedMs, double MeasuredMs, int Count);
