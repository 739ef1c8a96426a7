using System.Reflection;
using Xunit.Abstractions;
using Xunit.Sdk;

[assembly: TestCollectionOrderer("ShardStream.Tests.LongCollectionsFirst", "ShardStream.Tests")]

namespace ShardStream.Tests;

/// <summary>
/// On a test class (or a collection definition): its tests together take minutes (about
/// <paramref name="seconds"/> in a CI run), so its collection starts before the short ones, the
/// longest first (<see cref="LongCollectionsFirst"/>).
/// </summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class RunsLongAttribute(int seconds) : Attribute
{
    public int Seconds { get; } = seconds;
}

/// <summary>
/// xunit runs three test collections at a time (xunit.runner.json) and starts them in this order. A
/// collection of minutes that comes last runs alone at the end while the other slots are idle: the
/// long ones (<see cref="RunsLongAttribute"/>) start first, the rest in xunit's own order after them.
/// </summary>
public sealed class LongCollectionsFirst : ITestCollectionOrderer
{
    /// <summary>The long collections' seconds by display name: a named one's, or "Test collection for" a class's own.</summary>
    private static readonly Dictionary<string, int> Long = typeof(LongCollectionsFirst).Assembly.GetTypes()
        .Where(t => t.IsDefined(typeof(RunsLongAttribute)))
        .ToDictionary(
            t => t.GetCustomAttribute<CollectionDefinitionAttribute>() is null
                ? $"Test collection for {t.FullName}"
                : (string)t.CustomAttributes.Single(a => a.AttributeType == typeof(CollectionDefinitionAttribute)).ConstructorArguments[0].Value!,
            t => t.GetCustomAttribute<RunsLongAttribute>()!.Seconds,
            StringComparer.Ordinal);

    private readonly DefaultTestCollectionOrderer _default = new();

    public IEnumerable<ITestCollection> OrderTestCollections(IEnumerable<ITestCollection> testCollections) =>
        _default.OrderTestCollections(testCollections).OrderByDescending(c => Long.GetValueOrDefault(c.DisplayName));
}
