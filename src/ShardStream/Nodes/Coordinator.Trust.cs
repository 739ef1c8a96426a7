using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>The coordinator's side of trust: signing, admission tickets, the upload cap, and what it does with an accusation.</summary>
public sealed partial class Coordinator
{
    /// <summary>A ticket for a test's hand-made child: attach to <paramref name="parentId"/> as <paramref name="childId"/> for these shards.</summary>
    internal byte[] IssueTicket(int parentId, int childId, params int[] shards) => _tracker.IssueTicket(parentId, childId, shards);

    /// <summary>
    /// A joiner's upload is what it says, up to <see cref="CoordinatorOptions.MaxPeerUpload"/>: a peer
    /// that claims more is placed as if it had said the cap, so a liar cannot buy a place near the root.
    /// </summary>
    private int CapUpload(Hello hello, int budget)
    {
        int cap = Budgets.FromMultiple(_options.MaxPeerUpload, _options.ShardCount);
        if (budget <= cap) return budget;
        CoordinatorLog.UploadCapped(Log,
            hello.ListenAddress, hello.UploadPercent / 100.0, _options.MaxPeerUpload);
        return cap;
    }
}
