"""The AWS side: instance-role credentials from IMDS, endpoints by partition, the Auto Scaling
Query API signed with Signature Version 4 (requests-aws4auth). Loaded only when ASG_LIFECYCLE_HOOK
is set."""
