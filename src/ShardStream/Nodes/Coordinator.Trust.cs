using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>The coordinator's side of trust: signing, admission tickets, the upload cap, and what it does with an accusation.</summary>
public sealed partial class Coordinator
{
    private ulong _ticketSerial;

    /// <summary>
    /// Gives every Redirect entry the admission ticket its child shows the parent: one per parent,
    /// naming that parent, the child and the shards it is to serve it. Called under the gate.
    /// </summary>
    private ShardAssignment[] WithTickets(int childId, ShardAssignment[] entries)
    {
        var result = (ShardAssignment[])entries.Clone();
        foreach (var group in entries.Where(e => e.Kind == AssignmentKind.Redirect).GroupBy(e => e.ParentId))
        {
            byte[] ticket = new AdmissionTicket(group.Key, (ulong)childId, AdmissionTicket.MaskOf(group.Select(e => (int)e.Shard)), ++_ticketSerial).Sign(_signer);
            for (int i = 0; i < result.Length; i++)
                if (result[i].Kind == AssignmentKind.Redirect && result[i].ParentId == group.Key) result[i] = result[i] with { Ticket = ticket };
        }
        return result;
    }

    /// <summary>A ticket for a test's hand-made child: attach to <paramref name="parentId"/> as <paramref name="childId"/> for these shards.</summary>
    internal byte[] IssueTicket(int parentId, int childId, params int[] shards)
    {
        lock (_gate) return new AdmissionTicket((ulong)parentId, (ulong)childId, AdmissionTicket.MaskOf(shards), ++_ticketSerial).Sign(_signer);
    }

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

    /// <summary>A reporter may accuse this many parents; one that accuses more is taken for the liar.</summary>
    private const int MaxAccusations = 2;

    /// <summary>
    /// A child cut its parent off for what the parent sent (data that failed verification, a
    /// frame it may not send). The coordinator cannot see the bytes, so it checks what it can:
    /// the reporter must be that parent's child in the plan, and may accuse only
    /// <see cref="MaxAccusations"/> parents in its life (an honest peer meets a liar rarely; a
    /// peer that finds every parent lying is the liar, and is evicted itself). The accused parent
    /// leaves the overlay at once (its children get their Moves now, not after a timeout) and its
    /// listen address is refused from then on.
    /// </summary>
    private void OnParentAccused(PeerSession reporter, int parentId, ShardStart[] shards, string violation)
    {
        PeerSession? parent;
        lock (_gate)
        {
            if (!_peers.ContainsKey(reporter.Id)) return;
            if (parentId == Planner.Source)
            {
                CoordinatorLog.CoordinatorAccused(Log, reporter.Id, violation);
                parent = null;
            }
            else if (!_peers.TryGetValue(parentId, out parent))
            {
                CoordinatorLog.AccusedAlreadyOut(Log, reporter.Id, parentId, violation);
                return;
            }
            else if (!shards.Any(s => s.Shard < _options.ShardCount && _planner.ParentOf(reporter.Id, s.Shard) == parentId))
            {
                CoordinatorLog.AccusationIgnored(Log, reporter.Id, parentId, violation);
                return;
            }
            else if (++reporter.Accusations > MaxAccusations)
            {
                CoordinatorLog.AccuserEvicted(Log, reporter.Id, reporter.Accusations, parentId);
                reporter.Control.CloseAsync(GoodbyeCode.Refused, $"evicted: this peer accused {reporter.Accusations} parents of lying").Observe(Log, $"peer {reporter.Id}: evicting");
                RemovePeer(reporter, "accused too many parents", graceful: false);
                return;
            }
            else
            {
                _cutOff.Add(parent.Address);
            }
        }
        if (parent is null)
        {
            OnParentLost(reporter, parentId, shards);
            return;
        }
        CoordinatorLog.ParentCutOff(Log,
            parent.Id, parent.Address, reporter.Id, violation);
        RemovePeer(parent, $"cut off: {violation}", graceful: false);
        parent.Control.CloseAsync(GoodbyeCode.Refused, $"evicted: child {reporter.Id} reports that you sent: {violation}").Observe(Log, $"peer {parent.Id}: evicting");
    }
}
