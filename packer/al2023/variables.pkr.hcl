# Variables for this directory's build. ../al2023 and ../ubuntu declare the same ones, apart
# from the package_path default (tests/packaging/test_packer.py checks that they stay in step).

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes minor version of the source AMI, e.g. 1.34."
  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "The kubernetes_version must look like 1.34."
  }
}

variable "region" {
  type        = string
  description = "Region to build in (the AMI is registered there)."
}

variable "arch" {
  type        = string
  default     = "x86_64"
  description = "x86_64 or arm64. Chooses the source AMI and the default instance type."
  validation {
    condition     = contains(["x86_64", "arm64"], var.arch)
    error_message = "The arch must be x86_64 or arm64."
  }
}

variable "instance_type" {
  type        = string
  default     = ""
  description = "Build instance type; empty picks t3.medium (x86_64) or t4g.medium (arm64)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the build instance; empty uses the default VPC."
}

variable "vpc_id" {
  type        = string
  default     = ""
  description = "VPC for the build instance; empty uses the default VPC."
}

variable "ami_name_prefix" {
  type        = string
  default     = "nodeagent-eks"
  description = "AMI names are <prefix>-<os>-<arch>-k8s<version>-nodeagent<version>-<timestamp>."
}

variable "extra_tags" {
  type        = map(string)
  default     = {}
  description = "Tags merged into the AMI and snapshot tags (they win over ours)."
}

variable "nodeagent_version" {
  type        = string
  default     = ""
  description = "Version of the package to install; empty reads nodeagent/__init__.py."
}

variable "package_path" {
  type        = string
  default     = ""
  description = "The rpm to install; empty means dist/nodeagent-<version>-1.noarch.rpm."
}

locals {
  repo_root = "${path.root}/../.."
  nodeagent_version = var.nodeagent_version != "" ? var.nodeagent_version : regex(
    "__version__ = \"([^\"]+)\"", file("${local.repo_root}/nodeagent/__init__.py")
  )[0]
  package_path  = var.package_path != "" ? var.package_path : "${local.repo_root}/dist/nodeagent-${local.nodeagent_version}-1.noarch.rpm"
  instance_type = var.instance_type != "" ? var.instance_type : (var.arch == "arm64" ? "t4g.medium" : "t3.medium")
  build_stamp   = formatdate("YYYYMMDDhhmmss", timestamp())

  # lifecycle=Ec2Spot marks AMIs meant for spot node groups (the workshop/eksctl convention).
  common_tags = {
    lifecycle          = "Ec2Spot"
    nodeagent_version  = local.nodeagent_version
    kubernetes_version = var.kubernetes_version
    arch               = var.arch
    built_by           = "packer"
  }
}
