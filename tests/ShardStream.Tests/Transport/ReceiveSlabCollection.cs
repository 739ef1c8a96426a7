namespace ShardStream.Tests.Transport;

/// <summary>
/// Receive slabs come from one process-wide idle stack. Tests that open TCP connections (whose
/// pipes rent slabs) or look at that stack run one at a time, so that counts stay exact.
/// </summary>
[CollectionDefinition(Name)]
public sealed class ReceiveSlabCollection
{
    public const string Name = "receive slabs";
}
