# A single Consul server with the web UI, for deploy/stack.yml. Mounted as a docker
# config into /consul/config, which the image's entry point loads (-config-dir).
#
# This is a self-contained reference setup. Pointing the gateway at a real Consul
# cluster instead: remove the `consul` service from the stack, set consul.address in
# gateway.toml (or SMS_CONSUL__ADDRESS) to an agent of that cluster, and give each
# agent that should call the gateway's webhook the watches of watches.json.

server           = true
bootstrap_expect = 1

# One server, no gossip peers: serf and raft stay on loopback. This sidesteps picking
# one of the several addresses a swarm task has (overlay, ingress, gwbridge), which
# Consul refuses to guess. Clients use the HTTP API, which listens everywhere.
bind_addr   = "127.0.0.1"
client_addr = "0.0.0.0"

ui_config {
  enabled = true
}

# The state (including the services registered on this agent and their checks) lives
# in /consul/data, a volume in the stack, so a restarted server keeps the
# registrations of the reference services and their TTL heartbeats keep working.
disable_update_check = true
log_level            = "INFO"

# ACLs are off in this reference setup. To turn them on: add
#   acl { enabled = true  default_policy = "deny"  enable_token_persistence = true }
# create tokens for the gateway (service:read on DMS.SMS.v1.service.*, plus
# service:write for the health flip), for the reference services (service:write) and
# for the watches (service:read, set as "token" in each watch), store them as docker
# secrets, and set SMS_CONSUL__TOKEN_FILE (gateway) and FILE__SMS_CONSUL_TOKEN
# (reference services) in the stack.
