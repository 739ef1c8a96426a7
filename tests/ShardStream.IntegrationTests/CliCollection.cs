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
/// <see cref="RejoinNetnsTests"/>, the only tests here that make network namespaces, one at a time)
/// and the README claims of <see cref="CliClaimsTests"/>.
/// </summary>
[CollectionDefinition(Name)]
public sealed class BesideCliCollection
{
    public const string Name = "no duration asserted, beside the CLI chain";
}
