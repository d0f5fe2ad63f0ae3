// Package messages holds the wire contract generated from proto/ (the
// *.pb.go files, never edited by hand: `make proto` regenerates them) and the
// actor-internal message types that travel between the actors of the tree
// (internal.go). Nothing here talks to the network or the disk.
package messages
