namespace ShardStream.IntegrationTests;

/// <summary>
/// The CLI tests start a coordinator and its peers (and ffmpeg, chromium) each: one at a time, as
/// when the project ran one test at a time. Only <see cref="PackageTests"/> (a Release build, no
/// timing checked) runs beside them; the collections that must run alone come after both
/// (<see cref="CliResilienceCollection"/>, <see cref="NetnsCollection"/>).
/// </summary>
[CollectionDefinition(Name)]
public sealed class CliCollection
{
    public const string Name = "CLI processes, one at a time";
}
