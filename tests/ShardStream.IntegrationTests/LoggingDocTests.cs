using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace ShardStream.IntegrationTests;

/// <summary>
/// docs/logging.md's id table covers every event id the library and the CLI define: each
/// <c>[LoggerMessage]</c> id lies in the range of one of its rows (read from the assemblies, not
/// from the source, so a new id in a new class is not missed).
/// </summary>
public sealed partial class LoggingDocTests
{
    [Fact]
    public void Every_event_id_is_in_a_row_of_the_id_table()
    {
        var ids = LoggerMessages().Select(x => (x.Attribute.EventId, x.Name)).ToList();
        Assert.True(ids.Count > 100, $"only {ids.Count} [LoggerMessage] methods found");

        string doc = File.ReadAllText(Path.Combine(PackageTests.RepositoryRoot(), "docs", "logging.md"));
        // The id table only: the single ids of the alert table below it cover no range.
        const string Header = "| Ids | Group | Class |";
        int start = doc.IndexOf(Header, StringComparison.Ordinal);
        Assert.True(start >= 0, $"docs/logging.md has no id table (a line \"{Header}\")");
        int end = doc.IndexOf("\n\n", start, StringComparison.Ordinal);
        string table = end < 0 ? doc[start..] : doc[start..end];
        var rows = Row().Matches(table)
            .Select(m => (From: int.Parse(m.Groups[1].Value), To: int.Parse(m.Groups[2].Success ? m.Groups[2].Value : m.Groups[1].Value)))
            .ToList();
        var missing = ids.Where(id => !rows.Any(r => r.From <= id.EventId && id.EventId <= r.To)).Select(id => $"{id.EventId} ({id.Name})").ToList();
        Assert.True(missing.Count == 0, $"event ids in no row of docs/logging.md's id table: {string.Join(", ", missing)}");
    }

    /// <summary>
    /// Each event id names one event: two <c>[LoggerMessage]</c> methods may share an id only when
    /// they are the same line (name, level and text), as a read loop's BackgroundTaskFailed (9100).
    /// An operator filtering on an id must not get another event's lines.
    /// </summary>
    [Fact]
    public void No_two_events_share_an_id()
    {
        var clashes = LoggerMessages()
            .GroupBy(x => x.Attribute.EventId)
            .Where(g => g.Select(x => (x.Attribute.EventName, x.Attribute.Level, x.Attribute.Message)).Distinct().Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(x => $"{x.Name} (\"{x.Attribute.Message}\")"))}")
            .ToList();
        Assert.True(clashes.Count == 0, $"event ids given to different lines:\n{string.Join('\n', clashes)}");
    }

    private static List<(LoggerMessageAttribute Attribute, string Name)> LoggerMessages() =>
        [.. new[] { typeof(ShardStream.Nodes.Coordinator).Assembly, Assembly.Load("shardstream") }
            .SelectMany(a => a.GetTypes())
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Select(m => (Method: m, Attribute: m.GetCustomAttribute<LoggerMessageAttribute>()))
            .Where(x => x.Attribute is not null)
            .Select(x => (x.Attribute!, $"{x.Method.DeclaringType!.Name}.{x.Method.Name}"))];

    // A row of the id table: "| 900–916 | ..." (or one id).
    [GeneratedRegex(@"^\| (\d+)(?:–(\d+))? \|", RegexOptions.Multiline)]
    private static partial Regex Row();
}
