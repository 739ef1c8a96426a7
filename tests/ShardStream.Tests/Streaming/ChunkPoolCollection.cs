namespace ShardStream.Tests.Streaming;

/// <summary>
/// Chunk objects come from one process-wide pool. Tests that look at whether a chunk's buffer was
/// returned run one at a time, so that no other test can rent the same chunk in between.
/// </summary>
[CollectionDefinition(Name)]
public sealed class ChunkPoolCollection
{
    public const string Name = "chunk pool";
}
