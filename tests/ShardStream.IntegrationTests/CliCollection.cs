namespace ShardStream.IntegrationTests;

/// <summary>
/// The CLI tests start a coordinator and its peers (and ffmpeg, chromium) each: one at a time, as
/// when the project ran one test at a time. Beside them runs <see cref="BesideCliCollection"/>, the
/// tests that assert no duration; the collections that must run alone come after both
/// (<see cref="CliResilienceCollection"/>, <see cref="NetnsCollection"/>).
/// </summary>
[CollectionDefinition(Name)]
public sealed class CliCollection
{
    public const string Name = "CLI processes, one at a time";
}

/// <summary>
/// Tests that check bytes, exit codes and messages but no duration or rate, each waiting for its
/// conditions with deadlines of minutes: one at a time beside the <see cref="CliCollection"/>
/// chain, so that a slow start under the other chain's load costs time, not a failure.
/// <see cref="PackageTests"/> (a Release build), the multi-host runs (<see cref="MultiHostTests"/>,
/// <see cref="RejoinNetnsTests"/>, the only tests here that make network namespaces, one at a time),
/// the README claims of <see cref="CliClaimsTests"/>, and the short CLI runs that check messages,
/// files and bytes with no rate or stall to measure: wrong input (<see cref="CliErrorTests"/>), the
/// key file (<see cref="CliStreamKeyTests"/>), <c>simulate</c> (<see cref="CliSimulateLatencyTests"/>),
/// <c>--advertise</c> (<see cref="CliAdvertiseTests"/>) and <c>--merge-reads</c>
/// (<see cref="CliMergeReadsTests"/>). This collection's slot was idle for the last two thirds of
/// the chain (ci253: 222-533 s), and these took 53 s of it.
/// </summary>
[CollectionDefinition(Name)]
public sealed class BesideCliCollection
{
    public const string Name = "no duration asserted, beside the CLI chain";
}
