package replica

// pendingTable remembers, for every command received at this replica and not yet
// answered, who waits for its reply. Every replica executes every command, but only the
// one that received a command answers it, so most lookups (commands received elsewhere)
// miss: the table is keyed by client first — a small map of the clients connected here,
// with the last client cached because an instance's commands come in runs from one
// client — and by sequence number inside a client (a fast uint64 map).
type pendingTable struct {
	clients map[uint64]*clientPending
	last    *clientPending
	lastID  uint64
	n       int
}

type clientPending struct {
	bySeq map[uint64]pendingCmd
}

func newPendingTable() pendingTable {
	return pendingTable{clients: make(map[uint64]*clientPending)}
}

func (t *pendingTable) client(id uint64) *clientPending {
	if t.last != nil && t.lastID == id {
		return t.last
	}
	cp := t.clients[id]
	if cp != nil {
		t.last, t.lastID = cp, id
	}
	return cp
}

func (t *pendingTable) add(client, seq uint64, p pendingCmd) {
	cp := t.client(client)
	if cp == nil {
		cp = &clientPending{bySeq: make(map[uint64]pendingCmd)}
		t.clients[client] = cp
		t.last, t.lastID = cp, client
	}
	if _, dup := cp.bySeq[seq]; !dup {
		t.n++
	}
	cp.bySeq[seq] = p // a retry on a new connection replaces the old one
}

// take removes and returns the entry for (client, seq).
func (t *pendingTable) take(client, seq uint64) (pendingCmd, bool) {
	if t.n == 0 {
		return pendingCmd{}, false
	}
	cp := t.client(client)
	if cp == nil {
		return pendingCmd{}, false
	}
	p, ok := cp.bySeq[seq]
	if !ok {
		return pendingCmd{}, false
	}
	delete(cp.bySeq, seq)
	t.n-- // an emptied client entry stays until sweep: an active client sends more
	return p, true
}

// sweep forgets entries older than maxAge ticks and clients without entries.
func (t *pendingTable) sweep(now, maxAge uint64) {
	for id, cp := range t.clients {
		for seq, p := range cp.bySeq {
			if now-p.tick >= maxAge {
				delete(cp.bySeq, seq)
				t.n--
			}
		}
		if len(cp.bySeq) == 0 {
			delete(t.clients, id)
		}
	}
	t.last, t.lastID = nil, 0
}

// drain calls f for every entry and empties the table.
func (t *pendingTable) drain(f func(client, seq uint64, p pendingCmd)) {
	for id, cp := range t.clients {
		for seq, p := range cp.bySeq {
			f(id, seq, p)
		}
	}
	clear(t.clients)
	t.last, t.lastID, t.n = nil, 0, 0
}
