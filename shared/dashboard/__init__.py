"""The job dashboard: a page listing the jobs and a page per job (progress, rejections, fine-tune loss, evaluation,
downloads), served by the Functions app behind Entra ID sign-in and by `distill ui` on this machine, from the same
routes (`shared.dashboard.routes`)."""
